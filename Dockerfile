# Build stage: compile TypeScript.
FROM node:20-slim AS build
WORKDIR /app
COPY package.json package-lock.json tsconfig.json ./
COPY src ./src
COPY test ./test
COPY bench ./bench
RUN npm ci --ignore-scripts && npx tsc -p tsconfig.json

# Runtime stage: production dependencies and the compiled sources only, as the non-root node user.
FROM node:20-slim
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts && npm cache clean --force
COPY --from=build /app/dist/src ./dist/src
RUN mkdir -p /var/lib/prefect-otel && chown node:node /var/lib/prefect-otel
USER node
ENTRYPOINT ["node", "dist/src/cli.js"]
CMD ["watch"]
