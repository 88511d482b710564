"""The command line dispatcher."""
import subprocess
import sys

from litefer.cli import COMMANDS, build_parser, main


def test_every_subcommand_builds_its_parser():
    import importlib
    build_parser()                                   # every module's add_arguments runs
    for name, (module, _) in COMMANDS.items():
        mod = importlib.import_module(module)
        assert callable(mod.add_arguments) and callable(mod.main), name


def test_predict_parser_does_not_import_torch():
    code = ("import sys; from litefer.cli import build_parser; build_parser('predict'); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_command_is_an_error(capsys):
    try:
        main(["frobnicate"])
    except SystemExit as e:
        assert e.code == 2
    assert "invalid choice" in capsys.readouterr().err


def _config(tmp_path, **data):
    import yaml

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"data": {"dataset": "ferplus", "root": str(tmp_path / "no_data"), **data},
                                    "run": {"out_dir": str(tmp_path / "runs"), "progress": "never"}}))
    return str(path)


def test_config_and_data_errors_are_one_line_with_debug_for_the_traceback(tmp_path, capsys):
    """Every config or data error of `litefer train` printed a traceback before."""
    cfg = _config(tmp_path)
    assert main(["train", cfg, "--set", "optim.min_lr=-1"]) == 2
    err = capsys.readouterr().err
    assert err == "litefer train: error: optim.min_lr must be in [0, inf), got -1.0\n"
    assert main(["train", cfg, "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("litefer train: error: FERPlus root") and err.count("\n") == 1 and "no_data" in err
    from litefer.train.config import ConfigError

    for argv in (["--debug", "train", cfg, "--set", "optim.epochs=0"], ["train", cfg, "--set", "optim.epochs=0", "--debug"]):
        try:
            main(argv)
        except ConfigError as e:
            assert "optim.epochs must be in [1, inf), got 0" in str(e)
        else:
            raise AssertionError(f"--debug did not let the error through: {argv}")


def test_unexpected_errors_name_their_type():
    from litefer.cli import error_line

    assert error_line("export", ValueError("bad file x.pt")) == "litefer export: error: bad file x.pt"
    assert error_line("export", KeyError("stem")) == \
        "litefer export: error: KeyError: 'stem' (--debug shows the traceback)"
