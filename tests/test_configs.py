"""Where config files are found: a checkout's configs/, $SEQZOO_CONFIGS, or the copy shipped
in the package (seqzoo/configs); packaged configs by name; ``seqzoo configs export``.

The real wheel is checked end to end by ``python3 scripts/dev.py test`` (its package
check); here the installed layout is reproduced by copying the package into a folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import seqzoo
from seqzoo.cli import app
from seqzoo.config import ConfigError, config_file, configs_dir, load_yaml
from seqzoo.train import compose

CHECKOUT = Path(__file__).resolve().parents[1]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_in_a_checkout_the_checkouts_configs_are_used(monkeypatch):
    monkeypatch.delenv("SEQZOO_CONFIGS", raising=False)
    assert configs_dir() == CHECKOUT / "configs"


def test_packaged_names_resolve_from_any_folder(tmp_path, monkeypatch):
    """"s4d.yaml", "layers/s4d.yaml" and "configs/layers/s4d.yaml" all name the same file
    when the working folder has none of them; build() gets the file's options."""
    monkeypatch.chdir(tmp_path)
    want = configs_dir() / "layers" / "s4d.yaml"
    for name in ("s4d.yaml", "layers/s4d.yaml", "configs/layers/s4d.yaml", Path("s4d.yaml")):
        assert config_file(name, "layers") == want, name
    assert config_file("listops.yaml", "lra") == configs_dir() / "lra" / "listops.yaml"

    options = load_yaml(want)
    assert options.pop("layer") == "s4d" and options, "configs/layers/s4d.yaml should set some options"
    cfg = seqzoo.build("s4d.yaml", d_model=8).config
    assert cfg.d_model == 8
    for key, value in options.items():
        if key != "d_model":
            assert getattr(cfg, key) == (tuple(value) if isinstance(value, list) else value), key


def test_a_file_in_the_working_folder_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s4d.yaml").write_text("layer: s4d\nd_state: 6\n")
    assert config_file("s4d.yaml", "layers") == Path("s4d.yaml")
    assert seqzoo.make_config("s4d.yaml", d_model=8).d_state == 6


def test_an_unknown_config_name_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"'s4dd.yaml' not found.*Did you mean 's4d.yaml'\?.*Available layers "
                                          r"configs: .*s5.yaml"):
        seqzoo.build("s4dd.yaml", d_model=8)
    with pytest.raises(ConfigError, match="does not exist"):
        seqzoo.build(str(tmp_path / "s4d.yaml"), d_model=8)  # an absolute path is never looked up elsewhere


def test_a_run_config_by_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # the name finds configs/lra/listops.yaml (with --config, the layer's recipe is not applied)
    by_path = compose("listops", "s4d", config=configs_dir() / "lra" / "listops.yaml")
    assert compose("listops", "s4d", config="listops.yaml") == by_path
    r = CliRunner().invoke(app, ["train", "--task", "listops", "--config", "listops.yaml", "--dry-run"])
    assert r.exit_code == 0, r.output
    assert '"steps": 120000' in r.output  # configs/lra/listops.yaml's


def test_export_then_use_the_copy(tmp_path, monkeypatch):
    monkeypatch.delenv("SEQZOO_CONFIGS", raising=False)
    dest = tmp_path / "my-configs"
    r = CliRunner().invoke(app, ["configs", "export", str(dest)])
    assert r.exit_code == 0, r.output
    assert _files(dest) == _files(configs_dir())
    assert f"SEQZOO_CONFIGS={dest.resolve()}" in r.output

    r = CliRunner().invoke(app, ["configs", "export", str(dest)])
    assert r.exit_code == 2 and "--force" in r.output
    assert CliRunner().invoke(app, ["configs", "export", str(dest), "--force"]).exit_code == 0

    # the edited copy is what seqzoo reads once SEQZOO_CONFIGS points at it
    quick = dest / "presets" / "quick" / "listops.yaml"
    quick.write_text(quick.read_text().replace("steps: 200", "steps: 17"))
    assert compose("listops", "s4d", preset="quick").steps == 200
    monkeypatch.setenv("SEQZOO_CONFIGS", str(dest))
    assert configs_dir() == dest
    assert compose("listops", "s4d", preset="quick").steps == 17
    assert config_file("s4d.yaml", "layers") == dest / "layers" / "s4d.yaml"


def test_seqzoo_configs_pointing_nowhere_is_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SEQZOO_CONFIGS", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="SEQZOO_CONFIGS=.*is not a folder"):
        configs_dir()


def _configs_dir_in(site: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "SEQZOO_CONFIGS"}
    env["PYTHONPATH"] = str(site)
    return subprocess.run([sys.executable, "-c", "from seqzoo.config import configs_dir; print(configs_dir())"],
                          cwd=cwd, env=env, capture_output=True, text=True)


def test_an_installed_layout_uses_the_packaged_configs(tmp_path):
    """site-packages/seqzoo/configs, as the wheel lays it out, is found from any folder; a
    checkout (pyproject.toml + configs/ above the package) wins over it; neither is an error."""
    site, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copytree(CHECKOUT / "seqzoo", site / "seqzoo", ignore=shutil.ignore_patterns("__pycache__", "*.so"))

    r = _configs_dir_in(site, elsewhere)
    assert r.returncode != 0 and "no configs folder" in r.stderr and "reinstall seqzoo" in r.stderr

    shutil.copytree(CHECKOUT / "configs", site / "seqzoo" / "configs")
    r = _configs_dir_in(site, elsewhere)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()) == site / "seqzoo" / "configs"

    (site / "configs").mkdir()
    (site / "pyproject.toml").write_text("")
    r = _configs_dir_in(site, elsewhere)
    assert r.returncode == 0, r.stderr
    assert Path(r.stdout.strip()) == site / "configs"
