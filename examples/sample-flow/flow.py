"""The sample workload of docker-compose.yml: one flow, served on a one-minute schedule.

Every run has tasks, a task that fails on its first attempt and is retried, and a subflow with a
task of its own. About one run in three fails in `load` (the batch is too large), so Jaeger shows
successful and failed traces side by side.
"""
import random

from prefect import flow, task
from prefect.runtime import task_run

MAX_BATCH = 12


@task
def extract(n: int) -> list[int]:
    return list(range(n))


@task(retries=2, retry_delay_seconds=2)
def transform(rows: list[int]) -> list[int]:
    if task_run.run_count < 2:
        raise ConnectionError("upstream not ready (the first attempt always fails, then retries)")
    return [r * 2 for r in rows]


@task
def check_non_negative(rows: list[int]) -> bool:
    return all(r >= 0 for r in rows)


@flow(name="quality-checks")
def quality_checks(rows: list[int]) -> bool:
    return check_non_negative(rows)


@task
def load(rows: list[int]) -> int:
    if len(rows) > MAX_BATCH:
        raise ValueError(f"batch too large: {len(rows)} rows, at most {MAX_BATCH}")
    return len(rows)


@flow(name="etl", log_prints=True)
def etl(n: int | None = None) -> int:
    if n is None:
        n = random.choice([7, 10, 14])  # 14 rows fail in load
    rows = transform(extract(n))
    quality_checks(rows)
    loaded = load(rows)
    print(f"loaded {loaded} rows")
    return loaded


if __name__ == "__main__":
    etl.serve(name="sample", interval=60)
