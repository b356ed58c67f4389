"""``riskloop cluster ...`` and ``riskloop version``: operating riskloop on a Kubernetes cluster (KFP).

Imports stay light (typer, rich): kfp and the library load inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from riskloop.cli.common import console, out
from riskloop.errors import ConfigError

cluster_app = typer.Typer(help="Operate riskloop on a Kubernetes cluster (KFP).", no_args_is_help=True)

KfpHostOpt = Annotated[str, typer.Option("--kfp-host", help="KFP API URL, e.g. http://ml-pipeline.kubeflow:8888.")]
PipelinesDirOpt = Annotated[Path, typer.Option("--pipelines-dir", help="Compiled pipelines (riskloop compile).")]


def version_cmd(
    image: Annotated[bool, typer.Option("--image", help="Print the runtime image (repository:tag).")] = False,
    tag: Annotated[bool, typer.Option("--tag", help="Print the image tag <version>-<short sha>.")] = False,
    repository: Annotated[bool, typer.Option("--repository", help="Print the image repository.")] = False,
) -> None:
    """Print the version, git commit and image; one value with a flag (for make and scripts).

    Examples:

        riskloop version

        docker build -t "$(riskloop version --image)" .
    """
    from riskloop import __version__
    from riskloop.version import IMAGE_REPOSITORY, git_commit, image_tag, runtime_image

    chosen = [
        v for flag, v in ((image, runtime_image), (tag, image_tag), (repository, lambda: IMAGE_REPOSITORY)) if flag
    ]
    if len(chosen) > 1:
        raise ConfigError("--image, --tag and --repository print one value each", fix="pass only one of them")
    if chosen:
        out.print(chosen[0](), soft_wrap=True, highlight=False)
        return
    out.print(f"riskloop {__version__}\ncommit {git_commit()}\nimage {runtime_image()}", highlight=False)


@cluster_app.command("publish")
def publish_cmd(
    kfp_host: KfpHostOpt,
    pipelines_dir: PipelinesDirOpt = Path("/opt/riskloop/pipelines"),
    schedules: Annotated[
        Path | None, typer.Option("--schedules", help="YAML list of {name, pipeline, cron, parameters, enabled}.")
    ] = None,
    version: Annotated[str | None, typer.Option(help="Pipeline version name; default the image tag.")] = None,
    namespace: Annotated[str, typer.Option(help="KFP namespace (multi-user installs).")] = "kubeflow",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan, change nothing.")] = False,
) -> None:
    """Upload the compiled pipelines as a new version and create or replace their recurring runs.

    Idempotent: an existing version is reused, unchanged recurring runs are kept. Pipelines
    are named `riskloop-<file stem>`; versions are named by the image tag; everything lives in
    the experiment `riskloop`. The chart's post-install Job runs this.

    Examples:

        riskloop cluster publish --kfp-host http://ml-pipeline.kubeflow:8888 --schedules schedules.yaml

        riskloop cluster publish --kfp-host http://127.0.0.1:8888 --pipelines-dir build/pipelines --dry-run
    """
    from riskloop.orchestration import publish
    from riskloop.orchestration.schedules import load_schedules
    from riskloop.version import image_tag

    pipelines = publish.read_compiled(pipelines_dir)
    wanted = load_schedules(schedules) if schedules is not None else []
    tag = version or image_tag()
    client = publish.connect(kfp_host, namespace=namespace)
    steps = publish.publish(
        client,
        pipelines,
        tag,
        wanted,
        dry_run=dry_run,
        on_step=lambda a: console.print(f"  {'would ' if dry_run else ''}{a}"),
    )
    counts: dict[str, int] = {}
    for a in steps:
        counts[a.kind] = counts.get(a.kind, 0) + 1
    out.print(
        f"{'planned' if dry_run else 'published'} {len(pipelines)} pipelines at version {tag} to {kfp_host}: "
        + ", ".join(f"{k} {n}" for k, n in counts.items()),
        highlight=False,
    )


@cluster_app.command("run")
def run_cmd(
    kfp_host: KfpHostOpt,
    pipeline: Annotated[str, typer.Option(help="Pipeline file stem, e.g. training.")] = "training",
    pipelines_dir: PipelinesDirOpt = Path("build/pipelines"),
    param: Annotated[
        list[str] | None, typer.Option("--param", help="name=value (value parsed as YAML); repeatable.")
    ] = None,
    version: Annotated[str | None, typer.Option(help="Published version; default the image tag.")] = None,
    namespace: Annotated[str, typer.Option(help="KFP namespace (multi-user installs).")] = "kubeflow",
) -> None:
    """Start one run of a published pipeline version (make deploy starts the first training run).

    Example:

        riskloop cluster run --kfp-host http://127.0.0.1:8888 --pipeline training --param seed=1
    """
    import uuid

    import yaml

    from riskloop.orchestration import publish
    from riskloop.version import image_tag

    params: dict[str, Any] = {}
    for item in param or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--param {item!r} is not name=value", where="--param", fix="e.g. --param seed=1")
        params[key] = yaml.safe_load(value)
    chosen = next((p for p in publish.read_compiled(pipelines_dir) if p.stem == pipeline), None)
    if chosen is None:
        raise ConfigError(
            f"no compiled pipeline {pipeline!r} in {pipelines_dir}",
            where="--pipeline",
            fix="use a file stem from the pipelines dir, e.g. training",
        )
    tag = version or image_tag()
    run_id = publish.start_run(
        publish.connect(kfp_host, namespace=namespace), chosen, tag, params, f"{chosen.name}-{uuid.uuid4().hex[:8]}"
    )
    out.print(f"started run {run_id} of {chosen.name}@{tag}; follow it in the Kubeflow UI (Runs)", highlight=False)
