"""Train page: start k-fold training jobs and follow them live.

Jobs run as separate processes through :mod:`smallcovid.training.jobqueue` (persisted in
SQLite, so they survive a page reload or an app restart); this page submits them,
shows their curves and results, and cancels, resumes or installs them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import streamlit as st

from pages._shell import ensure_app_shell

ensure_app_shell()  # before the model code loads: a first request for /train gets the app's menu at once

from pages._shared import DISCLAIMER, admin_gate, cv_table, data_folder_input, show_error
from pages._ray_parts import cluster_caption, run_on_picker
from smallcovid.app import figures
from smallcovid.app import runview
from smallcovid.app.cardview import cv_operating_rows
from smallcovid.core.errors import SmallCovidError
from smallcovid.data.dataset import detect_format
from smallcovid.training.jobqueue import JobManager, can_resume, default_install_label, is_installed
from smallcovid.training.jobs import ACTIVE, Job, jobs_dir
from smallcovid.models import list_models
from smallcovid.app.policy import TRAINING_OFF
from smallcovid.training.config import PRECISIONS, TrainConfig
from smallcovid.training.pseudo import unlabeled_files

IMAGE_SIZES = (32, 64, 128, 192, 256, 320, 384, 512)
STATUS_ICON = {"queued": ":material/schedule:", "running": ":material/autorenew:", "done": ":material/check_circle:",
               "failed": ":material/error:", "cancelled": ":material/stop_circle:", "interrupted": ":material/warning:"}
CANCEL_WAIT_S = 3.0  # grace for the worker to stop between batches before the process group is killed
LOG_TAIL_WIDTH = 720  # px: long log lines wrap inside the popover instead of being cut


@st.cache_resource
def manager(db_path: str) -> JobManager:
    """One job manager per jobs database and server process (it keeps the child processes)."""
    return JobManager(db_path)


def current_manager() -> JobManager:
    return manager(str(jobs_dir() / "jobs.db"))


def make_configs(v: dict) -> list[tuple[TrainConfig, str]]:
    """Form values -> (config, job name) per chosen model; raises SmallCovidError on bad values."""
    if not v["models"]:
        raise SmallCovidError("choose at least one model to train")
    detect_format(v["data"])  # cheap: names only, no image is read
    data = str(Path(v["data"]).resolve())  # the worker may run from another folder
    common = dict(data=data, folds=int(v["folds"]), batch_size=int(v["batch_size"]), image_size=int(v["image_size"]),
                  device=v["device"], seed=int(v["seed"]), final=bool(v["final"]),
                  precision=v.get("precision", "auto"), **semi_options(v))
    out = []
    for model in v["models"]:
        if v["paper"]:
            cfg = TrainConfig.paper(model=model, **common)
        else:
            cfg = TrainConfig(model=model, epochs=int(v["epochs"]), lr=float(v["lr"]), **common)
        name = (v["name"] or "").strip()
        name = f"{name}-{model}" if name and len(v["models"]) > 1 else (name or model)
        out.append((cfg, name))
    return out


def semi_options(v: dict) -> dict:
    """The unlabeled-data part of the form as config fields ({} without an unlabeled folder):
    distillation when teacher runs are chosen, else self-training; raises SmallCovidError when
    the folder holds no images, or teachers are chosen without one."""
    folder = (v.get("unlabeled") or "").strip()
    teachers = tuple(v.get("teachers") or ())
    if not folder:
        if teachers:
            raise SmallCovidError("distillation needs the unlabeled slices folder the teachers label")
        return {}
    unlabeled_files(folder)  # fails fast, in the page, on a wrong folder
    if teachers:
        check_teacher_folds(teachers, int(v["seed"]), int(v["folds"]))
        return dict(unlabeled=str(Path(folder).resolve()), teachers=teachers,
                    distill_epochs=int(v.get("distill_epochs") or 10))
    return dict(unlabeled=str(Path(folder).resolve()), pseudo_keep=float(v["pseudo_keep"]),
                student_epochs=int(v["student_epochs"]) or None, student_lr=float(v["student_lr"]) or None)


def check_teacher_folds(teachers: tuple[str, ...], seed: int, folds: int) -> None:
    """Refuse, before a job starts, teachers whose runs were split with another seed or fold count."""
    for run in teachers:
        cfg = json.loads((Path(run) / "config.json").read_text())
        if (cfg.get("seed"), cfg.get("folds")) != (seed, folds) or cfg.get("splits"):
            raise SmallCovidError(f"teacher {Path(run).name} was trained on other folds (seed {cfg.get('seed')}, "
                                  f"{cfg.get('folds')} folds); set the same seed and folds ({seed}, {folds} now)")


def teacher_choices(jobs: list[Job]) -> dict[str, str]:
    """Finished jobs that can teach a distillation: ``{label: run folder}``, newest first."""
    out = {}
    for job in jobs:
        if job.status == "done" and (Path(job.run_dir) / "summary.json").is_file():
            out[f"#{job.id} {job.name} ({job.model})"] = job.run_dir
    return out


def semi_fields(teachers: dict[str, str]) -> dict:
    """Widgets for unlabeled slices (self-training or distillation) and precision (inside the job form)."""
    with st.expander("Unlabeled slices and precision"):
        unlabeled = st.text_input("Unlabeled slices folder on the server (optional)", key="tr_unlabeled",
                                  placeholder="e.g. data/covid-semiseg/unlabeled",
                                  help="Each fold's teacher labels these slices; a student trains on the "
                                       "labeled slices plus the kept pseudo-labeled ones.")
        c = st.columns(4)
        keep = c[0].number_input("Keep fraction", 0.05, 1.0, 0.5, step=0.05, key="tr_keep",
                                 help="share of the unlabeled slices the student trains on")
        s_epochs = c[1].number_input("Student epochs (0 = same)", 0, 1000, 0, key="tr_s_epochs")
        s_lr = c[2].number_input("Student lr (0 = same)", 0.0, 1.0, 0.0, format="%.5f", step=1e-4, key="tr_s_lr")
        precision = c[3].selectbox("Precision", PRECISIONS, key="tr_precision",
                                   help="auto: fp16 on CUDA, fp32 on CPU; bf16: bf16 autocast (faster on recent CPUs)")
        c = st.columns([3, 1])
        chosen = c[0].multiselect(
            "Teachers: distillation instead of self-training (optional)", list(teachers), key="tr_teachers",
            help="Finished jobs on the same folds (same seed and number of folds). Fold k's models of these runs "
                 "label the unlabeled slices; each fold's student pretrains on their mean probability, then "
                 "trains on the labeled slices. Keep fraction and student fields are then unused.")
        d_epochs = c[1].number_input("Pretraining passes", 1, 200, 10, key="tr_d_epochs",
                                     help="passes over the unlabeled slices before the labeled training")
    return dict(unlabeled=unlabeled, pseudo_keep=keep, student_epochs=s_epochs, student_lr=s_lr, precision=precision,
                teachers=[teachers[k] for k in chosen], distill_epochs=d_epochs)


def train_form(teachers: dict[str, str] | None = None) -> dict | None:
    """The job form -> its values when submitted, else None; ``teachers``: :func:`teacher_choices`."""
    defaults = TrainConfig(model=list_models()[0], data=".")
    with st.form("train_form"):
        models = st.multiselect("Model(s)", list_models(), default=[list_models()[0]], key="tr_models")
        data = data_folder_input("Data folder on the server", "tr_data")
        c = st.columns(4)
        folds = c[0].number_input("Folds", 2, 20, defaults.folds, key="tr_folds")
        epochs = c[1].number_input("Epochs", 1, 1000, defaults.epochs, key="tr_epochs")
        batch = c[2].number_input("Batch size", 1, 128, defaults.batch_size, key="tr_batch")
        lr = c[3].number_input("Learning rate", 1e-6, 1.0, defaults.lr, format="%.5f", step=1e-4, key="tr_lr")
        c = st.columns(4)
        size = c[0].selectbox("Image size", IMAGE_SIZES, index=IMAGE_SIZES.index(defaults.image_size), key="tr_size")
        devices = ["auto", "cpu"] + (["cuda"] if _cuda() else [])
        device = c[1].selectbox("Device", devices, key="tr_device")
        seed = c[2].number_input("Seed", 0, 2**31 - 1, defaults.seed, key="tr_seed")
        name = c[3].text_input("Job name", placeholder="e.g. unet-lr1e-3", key="tr_name")
        paper = st.checkbox("Paper protocol: plain gradient descent, lr 1e-4, 20 epochs × 600 steps, threshold 0.8 "
                            "(replaces the epochs and learning rate above)", key="tr_paper")
        final = st.checkbox("Also train a final model on all data (needed for “Use these weights”)", value=True,
                            key="tr_final")
        semi = semi_fields(teachers or {})
        executor = run_on_picker()  # this machine, or the Ray cluster from the settings
        if not st.form_submit_button("Start training", type="primary"):
            return None
    return dict(models=models, data=data, folds=folds, epochs=epochs, batch_size=batch, lr=lr, image_size=size,
                device=device, seed=seed, name=name, paper=paper, final=final, executor=executor, **semi)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def stop_job(mgr: JobManager, job_id: int) -> None:
    """Cancel: ask the worker to stop, wait a short grace, then kill its process group."""
    mgr.cancel(job_id)
    deadline = time.monotonic() + CANCEL_WAIT_S
    while time.monotonic() < deadline:
        mgr.tick()
        if mgr.get(job_id).status not in ACTIVE:
            return
        time.sleep(0.2)
    mgr.kill_now(job_id)


def draw_results(job: Job) -> None:
    """Per-fold results and mean ± std from the run's summary.json (once the folds are done)."""
    summary = runview.read_summary(job.run_dir)
    # The same rows as the Models page: each fold at its tuned threshold, the run's fixed one last.
    rows = cv_operating_rows({"cv": summary}) if summary else []
    if not rows:
        return
    st.markdown(runview.cv_results_heading(job.config.get("threshold"), job.config.get("image_size")))
    st.table(cv_table(rows))
    st.caption(runview.results_caption(summary, final=bool(job.config.get("final"))))


def draw_outcome(job: Job) -> None:
    """How a job that stopped ended: a cancel is the user's own choice (neutral), a failure an error."""
    if job.status == "cancelled":
        st.info(f"{runview.stop_reason(job.error, 'cancelled')}. **Resume** continues from the last finished epoch.",
                icon=":material/stop_circle:")
    elif job.status == "interrupted":
        st.warning(f"{runview.stop_reason(job.error, 'the job stopped unexpectedly')}. **Resume** continues from the "
                   "last finished epoch.", icon=":material/warning:")
    elif job.error and job.status != "done":
        st.error(runview.stop_reason(job.error, "failed", sentence=False))


def draw_job(mgr: JobManager, job: Job) -> None:
    """Status, progress, curves, results, log tail and the action buttons of one job."""
    cfg = job.config
    st.caption(runview.job_caption(cfg, job.run_dir))
    cluster_caption(job, active=job.status in ACTIVE)
    if job.status in ACTIVE:
        st.progress(runview.progress_fraction(job.progress, cfg), text=runview.progress_text(job.progress))
    draw_outcome(job)
    histories = runview.read_histories(job.run_dir)
    if histories:
        st.plotly_chart(figures.training_curves_figure(histories, threshold=cfg.get("threshold")), key=f"curves-{job.id}")
    draw_results(job)
    left, right, _ = st.columns([1, 1, 4])
    tail = runview.log_tail(job.log_path, 15)
    if tail:
        with left.popover("Log tail"):
            st.code(tail, language=None, wrap_lines=True, width=LOG_TAIL_WIDTH)
    # The statuses are exclusive, so at most one action button shows.
    if job.status in ACTIVE and right.button("Cancel", key=f"cancel-{job.id}"):
        stop_job(mgr, job.id)
        st.rerun()
    if can_resume(job.status) and right.button("Resume", key=f"resume-{job.id}"):
        mgr.resume(job.id)
        st.rerun()
    if job.status == "done" and cfg.get("final"):
        if is_installed(job):
            st.success(f"Installed as {default_install_label(job)}: selectable on the Segment and Compare pages.")
        elif right.button("Use these weights", key=f"install-{job.id}", type="primary"):
            try:
                mgr.install(job.id)
            except SmallCovidError as exc:
                show_error(exc)
            else:
                st.rerun()


@st.fragment(run_every=2)
def jobs_panel() -> None:
    """The job list, refreshed every 2 s (also starts queued jobs and notices dead ones)."""
    mgr = current_manager()
    try:
        mgr.tick()
    except SmallCovidError as exc:
        show_error(exc)
    jobs = mgr.list()
    st.subheader(f"Jobs ({len(jobs)})")
    if not jobs:
        st.info("No training jobs yet.")
        return
    for i, job in enumerate(jobs):
        title = f"#{job.id} {job.name} · {job.model} · {job.status}"
        with st.expander(title, expanded=i == 0 or job.status == "running", key=f"job-{job.id}",
                         icon=STATUS_ICON.get(job.status)):
            draw_job(mgr, job)


def main() -> None:
    st.title("Train")
    st.caption("k-fold training jobs, one process each, at most one running at a time (others wait in the queue). "
               + DISCLAIMER)
    if not admin_gate(TRAINING_OFF, "tr_admin"):  # public mode: no form, no job list
        return
    values = train_form(teacher_choices(current_manager().list()))
    if values is not None:
        try:
            ids = [current_manager().submit(cfg, name, executor=values.get("executor"))
                   for cfg, name in make_configs(values)]
        except SmallCovidError as exc:
            show_error(exc)
        else:
            st.success(f"Submitted job(s) {', '.join(f'#{i}' for i in ids)}.")
    jobs_panel()


if __name__ == "__main__":
    main()
