"""``leaf tiny``: a random teacher/student pair that loads through from_pretrained, reproducibly."""

from __future__ import annotations

from safetensors.torch import load_file

from leaf.cli import main
from leaf.models import load_model, load_tokenizer
from leaf.tiny import write_tiny


def test_tiny_pair_loads_and_is_seeded(tmp_path, capsys):
    assert main(["tiny", "--out", str(tmp_path / "a"), "--seed", "3"]) == 0
    assert "teacher" in capsys.readouterr().out
    teacher, student = load_model(str(tmp_path / "a" / "teacher")), load_model(str(tmp_path / "a" / "student"))
    assert teacher.config.num_hidden_layers == 4 and student.config.num_hidden_layers == 2
    assert load_tokenizer(str(tmp_path / "a" / "teacher")).get_vocab() == load_tokenizer(
        str(tmp_path / "a" / "student")).get_vocab()
    summary = write_tiny(out=tmp_path / "b", seed=3)
    assert summary.parameters["teacher"] == sum(p.numel() for p in teacher.parameters())
    same = load_file(str(tmp_path / "a" / "teacher" / "model.safetensors"))
    again = load_file(str(tmp_path / "b" / "teacher" / "model.safetensors"))
    assert all((same[k] == again[k]).all() for k in same)  # same seed, same weights
    write_tiny(out=tmp_path / "c", seed=4)
    other = load_file(str(tmp_path / "c" / "teacher" / "model.safetensors"))
    assert any((same[k] != other[k]).any() for k in same if same[k].numel() > 1)
