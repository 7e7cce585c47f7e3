"""Study design: pick the cases, render them through one pipeline, seal the list.

A study is fixed before it opens: real cases come from the held-out *test* split,
synthetic cases from one synthetic set; every case (plus optional duplicates for intra-rater
consistency) is rendered by `synthct.vtt.render` with one `RenderConfig` into
WS/studies/<study>/cases/<public_id>.png, where the public id is an opaque `secrets.token_hex(8)`.
The sealed manifest WS/studies/<study>/manifest.json maps every public id to its truth, source,
case id and PNG SHA-256; the SHA-256 of the manifest bytes is stored in the `studies` table, and
`verify_study` refuses a manifest or PNG that no longer matches. Cases cannot change afterwards:
there is no API that edits them. With `RenderConfig.stack` (the default) each case also gets its
scrollable slab, WS/studies/<study>/slabs/<public_id>.png (every slice of the slab in each
display window, `render.render_slab`), whose SHA-256 the manifest lists as `slab_sha256` beside
the sheet's layout (`manifest["slab"]`, one for the whole study).

`create_study` takes the volumes as arguments (tests need no GAN); `create_study_from_workspace`
is the thin wrapper the CLI uses: it loads the packed test split (`synthct.preprocess.load_packed`)
at the synthetic set's size and the set's NIfTI pairs (`synthct.sets.load_synthetic_pair`),
so both arrive on the same grid.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from synthct.vtt import StudyError, TamperedStudyError
from synthct.vtt.render import RenderConfig, render_case_png, render_slab_png, slab_layout
from synthct.workspace import Workspace, atomic_dir, atomic_write_bytes, check_name

MANIFEST = "manifest.json"
CASES_DIR = "cases"
SLABS_DIR = "slabs"
MANIFEST_FORMAT = "synthct-vtt-manifest/1"
REAL_SOURCE = "test split"

Pair = tuple[np.ndarray, np.ndarray]  # (image_hu (X, Y, Z) float, mask (X, Y, Z) {0, 1})


@dataclass(frozen=True)
class StudyInfo:
    name: str
    study_id: int
    manifest_sha256: str
    n_cases: int
    directory: Path


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def study_dir(ws: Workspace, name: str) -> Path:
    return ws.confine(ws.studies / check_name(name, "study name"))


def pick_real_cases(
    case_ids: list[str], centres: list[str], n: int, rng: np.random.Generator
) -> list[str]:
    """`n` case ids drawn round-robin over centres (each centre shuffled), so the real cases are
    as diverse as the split allows (the thesis picked its real cases "from various sources")."""
    if n > len(case_ids):
        raise StudyError(f"--n-real {n} is more than the {len(case_ids)} cases in the test split")
    by_centre: dict[str, list[str]] = {}
    for cid, centre in sorted(zip(case_ids, centres, strict=True)):
        by_centre.setdefault(centre, []).append(cid)
    queues = [list(rng.permutation(ids)) for _, ids in sorted(by_centre.items())]
    order = list(rng.permutation(len(queues)))
    picked: list[str] = []
    while len(picked) < n:
        for q in order:
            if queues[q] and len(picked) < n:
                picked.append(str(queues[q].pop()))
    return sorted(picked)


def _check_pairs(pairs: Mapping[str, Pair], what: str, shape: tuple[int, ...] | None) -> tuple:
    for cid, (image, mask) in pairs.items():
        image, mask = np.asarray(image), np.asarray(mask)
        if image.ndim != 3 or image.shape != mask.shape:
            raise StudyError(
                f"{what} case {cid!r}: image {image.shape} and mask {mask.shape} must be 3D "
                "(X, Y, Z) arrays of the same shape"
            )
        if shape is not None and image.shape != shape:
            raise StudyError(
                f"{what} case {cid!r} has grid {image.shape}, other cases {shape}: real and "
                "synthetic cases must share one grid (render them at the synthetic set's size)"
            )
        if not np.all(np.isfinite(image)):
            raise StudyError(f"{what} case {cid!r}: image has NaN/inf voxels")
        shape = image.shape
    return shape  # type: ignore[return-value]


def create_study(
    session: Session,
    ws: Workspace,
    name: str,
    real: Mapping[str, Pair],
    synthetic: Mapping[str, Pair],
    *,
    synthetic_source: str,
    real_source: str = REAL_SOURCE,
    params: RenderConfig | None = None,
    duplicates: int = 0,
    seed: int = 0,
    extra: dict[str, Any] | None = None,
    progress: bool = False,
) -> StudyInfo:
    """Render, seal and register a study; commits `session`.

    real / synthetic: case id -> (image_hu (X, Y, Z), mask (X, Y, Z)), all on one grid.
    duplicates: how many cases (alternating synthetic/real, seeded) are shown twice, each copy
    with its own public id. The folder appears only when complete (atomic rename after the
    database rows are committed), so a crash leaves neither a half study nor a dangling row.
    """
    from db.studies import add_study, get_study

    params = params or RenderConfig()
    d = study_dir(ws, name)
    if not real or not synthetic:
        raise StudyError(
            f"study {name!r} needs at least one real and one synthetic case "
            f"(got {len(real)} real, {len(synthetic)} synthetic)"
        )
    if not 0 <= duplicates <= len(real) + len(synthetic):
        raise StudyError(
            f"--duplicates {duplicates} must be between 0 and the number of cases "
            f"({len(real) + len(synthetic)})"
        )
    if get_study(session, name) is not None:
        raise StudyError(f"study {name!r} already exists in the database")
    shape = _check_pairs(real, "real", None)
    shape = _check_pairs(synthetic, "synthetic", shape)

    rng = np.random.default_rng(seed)
    originals = [("real", real_source, cid) for cid in sorted(real)]
    originals += [("synthetic", synthetic_source, cid) for cid in sorted(synthetic)]
    originals = [originals[i] for i in rng.permutation(len(originals))]
    dup_src = _pick_duplicates(originals, duplicates, rng)

    used: set[str] = set()

    def new_id() -> str:
        while (pid := secrets.token_hex(8)) in used:
            pass
        used.add(pid)
        return pid

    cases: list[dict[str, Any]] = []
    pngs: dict[str, bytes] = {}
    slabs: dict[str, bytes] = {}
    items = originals if not progress else _tqdm(originals, f"rendering {name}")
    for truth, source, cid in items:
        image, mask = (real if truth == "real" else synthetic)[cid]
        image, mask = np.asarray(image, np.float32), np.asarray(mask)
        png = render_case_png(image, mask, params)
        pid = new_id()
        pngs[pid] = png
        case = {
            "public_id": pid,
            "truth": truth,
            "source": source,
            "case_id": cid,
            "duplicate_of": None,
            "png_sha256": sha256_hex(png),
        }
        if params.stack:
            slabs[pid] = render_slab_png(image, mask, params)
            case["slab_sha256"] = sha256_hex(slabs[pid])
        cases.append(case)
    for k in dup_src:
        orig = cases[k]
        pid = new_id()
        pngs[pid] = pngs[orig["public_id"]]  # identical rendering, new public id
        if params.stack:
            slabs[pid] = slabs[orig["public_id"]]
        cases.append({**orig, "public_id": pid, "duplicate_of": orig["public_id"]})

    created = datetime.now(UTC)
    manifest = {
        "format": MANIFEST_FORMAT,
        "study": name,
        "created": created.isoformat(timespec="seconds"),
        "seed": int(seed),
        "design": {
            "n_real": len(real),
            "n_synthetic": len(synthetic),
            "duplicates": int(duplicates),
            "real_source": real_source,
            "synthetic_source": synthetic_source,
            **(extra or {}),
        },
        "grid": list(shape),
        "render": asdict(params),
        **({"slab": slab_layout(shape, params).as_dict()} if params.stack else {}),
        "cases": cases,
    }
    blob = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    digest = sha256_hex(blob)
    with atomic_dir(d) as tmp:
        for pid, png in pngs.items():
            atomic_write_bytes(tmp / CASES_DIR / f"{pid}.png", png)
        for pid, slab in slabs.items():
            atomic_write_bytes(tmp / SLABS_DIR / f"{pid}.png", slab)
        atomic_write_bytes(tmp / MANIFEST, blob)
        study = add_study(
            session,
            name=name,
            seed=int(seed),
            manifest_sha256=digest,
            params={
                "design": manifest["design"],
                "render": manifest["render"],
                "grid": list(shape),
            },
            cases=cases,
            created_at=created,
        )
        session.commit()
    return StudyInfo(name, study.id, digest, len(cases), d)


def _pick_duplicates(originals: list[tuple[str, str, str]], n: int, rng: np.random.Generator):
    """Indices of `n` originals to repeat, alternating synthetic / real so both are covered."""
    pools = {
        t: [i for i in rng.permutation(len(originals)) if originals[i][0] == t]
        for t in ("synthetic", "real")
    }
    out: list[int] = []
    turn = 0
    while len(out) < n:
        t = ("synthetic", "real")[turn % 2]
        turn += 1
        if pools[t]:
            out.append(int(pools[t].pop(0)))
    return out


def _tqdm(items, desc: str):
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit="case")


# -- verification -------------------------------------------------------------------------------
def load_manifest(ws: Workspace, study: Any) -> dict[str, Any]:
    """Read the study's manifest and check it against the hash sealed in the database.

    `study` is a `db.models.Study`. Raises TamperedStudyError when the file is missing, altered,
    or disagrees with the database's case rows.
    """
    path = study_dir(ws, study.name) / MANIFEST
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        raise TamperedStudyError(
            f"study {study.name!r}: sealed manifest {path} is missing"
        ) from None
    digest = sha256_hex(blob)
    if not hmac.compare_digest(digest, study.manifest_sha256):
        raise TamperedStudyError(
            f"study {study.name!r}: {path} has SHA-256 {digest[:16]}…, sealed value "
            f"{study.manifest_sha256[:16]}…; the manifest was changed after the study was sealed"
        )
    return json.loads(blob)


def verify_study(session: Session, ws: Workspace, study: Any, check_pngs: bool = True) -> dict:
    """Check manifest hash, database rows and (optionally) every PNG; return the manifest."""
    from db.studies import study_cases

    manifest = load_manifest(ws, study)
    rows = {c.public_id: c for c in study_cases(session, study.id)}
    listed = {c["public_id"]: c for c in manifest["cases"]}
    if set(rows) != set(listed):
        raise TamperedStudyError(
            f"study {study.name!r}: database cases differ from the sealed manifest "
            f"({len(rows)} vs {len(listed)} public ids)"
        )
    for pid, c in listed.items():
        r = rows[pid]
        if (r.truth, r.source, r.case_id, r.png_sha256) != (
            c["truth"],
            c["source"],
            c["case_id"],
            c["png_sha256"],
        ):
            raise TamperedStudyError(f"study {study.name!r}: case {pid} differs from the manifest")
        if check_pngs:
            read_case_png(ws, study.name, pid, c["png_sha256"])
            if "slab_sha256" in c:
                read_case_png(ws, study.name, pid, c["slab_sha256"], SLABS_DIR)
    return manifest


def read_case_png(
    ws: Workspace, study_name: str, public_id: str, expected_sha256: str, folder: str = CASES_DIR
) -> bytes:
    """The rendered PNG of one case (the mosaic, or from `folder=SLABS_DIR` the scrollable
    slab), refused if its bytes no longer match the sealed hash."""
    path = study_dir(ws, study_name) / folder / f"{check_name(public_id, 'case id')}.png"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TamperedStudyError(f"study {study_name!r}: case image {path} is missing") from None
    if not hmac.compare_digest(sha256_hex(data), expected_sha256):
        raise TamperedStudyError(
            f"study {study_name!r}: case image {path} was changed after sealing"
        )
    return data


def padded_length(
    ws: Workspace,
    study_name: str,
    manifest_sha256: str,
    public_ids: tuple[str, ...],
    folder: str = CASES_DIR,
) -> int:
    """The byte length every image of the study is padded to (synthct.vtt.blinding); with
    `folder=SLABS_DIR`, the one length of every scrollable slab.

    From the sizes of the sealed case PNGs, so it also holds for studies sealed before padding
    existed; cached per sealed manifest (case files never change after sealing).
    """
    return _padded_length(str(study_dir(ws, study_name) / folder), manifest_sha256, public_ids)


@functools.lru_cache(maxsize=32)
def _padded_length(cases_dir: str, manifest_sha256: str, public_ids: tuple[str, ...]) -> int:
    from synthct.vtt.blinding import study_length

    sizes = []
    for pid in public_ids:
        path = Path(cases_dir) / f"{check_name(pid, 'case id')}.png"
        try:
            sizes.append(path.stat().st_size)
        except FileNotFoundError:
            raise TamperedStudyError(f"case image {path} is missing") from None
    if not sizes:
        raise StudyError(f"study folder {cases_dir} lists no cases")
    return study_length(sizes)


# -- workspace wrapper (CLI) --------------------------------------------------------------------
def create_study_from_workspace(
    session: Session,
    ws: Workspace,
    name: str,
    synthetic_set: str,
    *,
    n_real: int = 5,
    n_synthetic: int = 5,
    duplicates: int = 0,
    seed: int = 0,
    params: RenderConfig | None = None,
) -> StudyInfo:
    """Pick `n_real` test-split cases (packed arrays at the set's size) and `n_synthetic`
    cases of `synthetic_set` (its NIfTI pairs), then `create_study`."""
    from synthct.config import DataConfig, from_dict
    from synthct.preprocess import load_packed, unpack
    from synthct.sets import load_synthetic_pair, read_datacard

    check_name(name, "study name")
    set_dir = ws.synthetic_dir(check_name(synthetic_set, "synthetic set"))
    if not set_dir.is_dir():
        raise StudyError(f"synthetic set {synthetic_set!r} not found in {ws.synthetic}")
    card = read_datacard(set_dir)
    data_dict = (card.run_config or {}).get("data")
    if data_dict is None and not card.model.size:
        raise StudyError(f"{set_dir / 'datacard.json'}: no run_config.data or model.size")
    cfg = from_dict(DataConfig, data_dict, "datacard run_config.data") if data_dict else None
    cfg = cfg or DataConfig(size=card.model.size)
    syn_ids = [c.case_id for c in card.cases]
    if not syn_ids:
        syn_ids = sorted(p.name.split("__")[0] for p in (set_dir / "imagesTr").glob("*__CT.nii.gz"))
    rng = np.random.default_rng(seed)
    if not 1 <= n_synthetic <= len(syn_ids):
        raise StudyError(f"--n-synthetic {n_synthetic}: set {synthetic_set!r} has {len(syn_ids)}")
    if n_real < 1:
        raise StudyError(f"--n-real {n_real}: at least one real case is needed")
    chosen_syn = sorted(str(c) for c in rng.choice(sorted(syn_ids), n_synthetic, replace=False))

    packed = load_packed(ws, cfg, split="test")
    chosen_real = pick_real_cases(list(packed.case_ids), list(packed.centres), n_real, rng)
    index = {cid: i for i, cid in enumerate(packed.case_ids)}
    real: dict[str, Pair] = {}
    for cid in chosen_real:
        image_hu, mask = unpack(np.asarray(packed.arrays[index[cid]]), cfg)
        real[cid] = (image_hu, mask)
    synthetic: dict[str, Pair] = {}
    for cid in chosen_syn:
        image, mask = load_synthetic_pair(set_dir, cid)
        synthetic[cid] = (image.array, mask.array)
    spacing = tuple(float(s) for s in packed.spacing)
    base = params or RenderConfig()
    params = RenderConfig(**{**asdict(base), "spacing": spacing})
    return create_study(
        session,
        ws,
        name,
        real,
        synthetic,
        synthetic_source=synthetic_set,
        params=params,
        duplicates=duplicates,
        seed=seed,
        extra={"data_size": cfg.size, "synthetic_datacard_run": card.run},
        progress=True,
    )
