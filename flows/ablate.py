"""The `ablate` flow: the paper's model ablations on one run's data, as one table.

Thin: `unirain_model.ablation.run_ablation` trains each variant in `RUN/ablation/<variant>/` (an
ordinary training run folder: rerunning resumes, a finished variant is not retrained) and scores it;
the flow writes `RUN/reports/ablation.{csv,md}` and publishes them as a table and a markdown artifact.
"""
from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_progress_artifact

from data_manifests import RunLayout

from .artifacts import artifact_key, publish_table
from .train import _Progress, training_data
from .ui import run_name, with_routed_logs


@flow(name="ablate", flow_run_name=run_name("ablate"), log_prints=True)
@with_routed_logs
def ablate_flow(run: str, variants: list[str], config: str = "configs/paper.yaml", manifest: str | None = None,
                iters: int | None = None, device: str | None = None, data: list[str] | None = None,
                test_manifest: list[str] | None = None) -> list[dict]:
    """Train and score model variants on the same data with the same recipe.

    Args:
        run: the run folder; variants train in RUN/ablation/<variant>/, the table goes to RUN/reports/ablation.*.
            A relative path is read from the flow run's working folder (the repository for `make serve`
            deployments, the current folder for the CLI): absolute paths are safest.
        variants: model config names under configs/model/ (`unirain`, `unirain-soft-soft`, ...) or YAML paths.
        config: run config whose `train:` section is the recipe (iterations, batch, crop, lr, sampler, CoBa),
            a path read like `run`; paths inside the config are read from the config's own folder.
        manifest: training pairs (default: the run's distilled manifest, else its candidates).
        iters: total iterations per variant, overriding the config.
        device: auto, cpu, cuda or cuda:N.
        data / test_manifest: test sets; default: the config's `evaluate:` section, else the held-out
            validation split of the training pairs.
    """
    from unirain_model.ablation import run_ablation, scoring_pairs, write_markdown
    from unirain_model.config import load_eval_config, load_train_config

    cfg = load_train_config(config, iters=iters, device=device)
    ecfg = load_eval_config(config)
    layout = RunLayout.at(run).create()
    train_data = training_data(run, manifest)
    pairs, test_name = scoring_pairs(data or ecfg.data, test_manifest or ecfg.manifests, train_data, cfg.val_fraction)

    def progress_for(name: str):
        aid = create_progress_artifact(progress=0.0, key=artifact_key(layout, f"ablation-{name}-progress"),
                                       description=f"ablation: training {name}")
        return _Progress(aid)

    protocol = ecfg.protocol
    table = run_ablation(cfg, layout.root, train_data, variants, pairs, device=device, progress_for=progress_for,
                         protocol=protocol)
    md = write_markdown(table, layout.reports / "ablation.md", cfg, test_name, protocol)
    publish_table(layout, "ablation", table.round(4), f"Model ablation (PSNR/SSIM per rain type) on {test_name}")
    create_markdown_artifact(key=artifact_key(layout, "ablation-md"), markdown=md, description="Model ablation table")
    print(md)
    print(f"reports: {layout.reports / 'ablation.csv'}, {layout.reports / 'ablation.md'}")
    return table.to_dict("records")
