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
