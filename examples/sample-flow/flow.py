"""A small flow for the compose stack: tasks, a retry, a nested subflow and a failure."""
import random

from prefect import flow, task


@task
def extract(n: int) -> list[int]:
    return list(range(n))


@task(retries=2, retry_delay_seconds=1)
def transform(rows: list[int]) -> list[int]:
    if random.random() < 0.5:
        raise RuntimeError("flaky upstream, retrying")
    return [r * 2 for r in rows]


@task
def load(rows: list[int]) -> int:
    if len(rows) > 12:
        raise ValueError(f"batch too large: {len(rows)} rows")
    return len(rows)


@flow(name="quality-checks")
def quality_checks(rows: list[int]) -> bool:
    return all(r >= 0 for r in rows)


@flow(name="etl", log_prints=True)
def etl(n: int = 10) -> int:
    rows = transform(extract(n))
    quality_checks(rows)
    return load(rows)


if __name__ == "__main__":
    # Every 2 minutes; runs with n=14 fail in load, the others complete (after retries).
    etl.serve(name="sample", interval=120, parameters={"n": random.choice([7, 10, 14])})
