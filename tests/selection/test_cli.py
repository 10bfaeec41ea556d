"""`uq-bias select` on precomputed features: the frames written are the ones chosen."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.io import read, write

from uq_bias.cli import main
from uq_bias.selection import greedy_logdet_reference


def test_cli_select_with_features(tmp_path, cu_frames, gaussian, capsys):
    pool = tmp_path / "candidates.extxyz"
    write(pool, cu_frames, format="extxyz")
    feats = gaussian(len(cu_frames), 6, seed=2)
    torch.save(feats, tmp_path / "features.pt")
    out = tmp_path / "selected.extxyz"
    argv = ["select", "--features", str(tmp_path / "features.pt"), "--pool", str(pool)]
    assert main([*argv, "--k", "4", "--out", str(out)]) == 0
    chosen = read(out, index=":")
    expected = greedy_logdet_reference(feats @ feats.T, 4)
    assert [a.info["selection_index"] for a in chosen] == expected
    assert [a.info["selection_rank"] for a in chosen] == [0, 1, 2, 3]
    for atoms, index in zip(chosen, expected):
        np.testing.assert_allclose(atoms.positions, cu_frames[index].positions, atol=1e-8)
        assert atoms.get_potential_energy() == pytest.approx(
            cu_frames[index].get_potential_energy()
        )
    assert "selected 4 of 4 asked from 12 pool frames with maxdet" in capsys.readouterr().out

    np.save(tmp_path / "short.npy", feats[:5].numpy())  # 5 rows for 12 frames
    bad = ["select", "--features", str(tmp_path / "short.npy"), "--pool", str(pool)]
    assert main([*bad, "--k", "2", "--out", str(tmp_path / "x.extxyz")]) == 2
    assert "5 rows but pool_frames has 12" in capsys.readouterr().err
    assert not (tmp_path / "x.extxyz").exists()


def test_cli_select_with_a_saved_uncertainty_model(tmp_path, tiny_mace, cu_frames, capsys):
    """--unc: a saved gradient-feature posterior. The first pick has the largest u^2 from the
    model's forward pass; the order equals brute-force log-det on one-frame-at-a-time features."""
    from uq_bias.uncertainty import GradientFeatureUncertainty, save

    torch.save(tiny_mace, tmp_path / "model.pt")
    unc = GradientFeatureUncertainty(str(tmp_path / "model.pt"))
    unc.fit(cu_frames[:4])
    save(unc, tmp_path / "unc")
    pool = cu_frames[4:9]
    write(tmp_path / "pool.extxyz", pool, format="extxyz")
    out = tmp_path / "selected.extxyz"
    argv = ["select", "--unc", str(tmp_path / "unc"), "--pool", str(tmp_path / "pool.extxyz")]
    assert main([*argv, "--k", "3", "--out", str(out), "--chunk-size", "2"]) == 0
    chosen = [a.info["selection_index"] for a in read(out, index=":")]
    feats = torch.cat([unc.selection_features(unc.graph(f)).detach() for f in pool])
    assert chosen == greedy_logdet_reference(feats @ feats.T, 3)
    u2 = unc(unc.graph(pool)).energy_uncertainty.detach() ** 2
    assert chosen[0] == int(torch.argmax(u2))
    torch.testing.assert_close(feats.pow(2).sum(1), u2.double(), rtol=1e-8, atol=0)
    assert "selected 3 of 3 asked from 5 pool frames" in capsys.readouterr().out


def test_cli_select_conditioned_on_labelled_frames(tmp_path, tiny_mace, cu_frames, capsys):
    """--labelled: picks and scores equal the Python API's with labelled_frames; the score of
    the frame picked first on the model's own posterior drops once it is labelled too."""
    from uq_bias.selection import select
    from uq_bias.uncertainty import GradientFeatureUncertainty, load, save

    torch.save(tiny_mace, tmp_path / "model.pt")
    unc = GradientFeatureUncertainty(str(tmp_path / "model.pt")).fit(cu_frames[:4])
    save(unc, tmp_path / "unc")
    pool = cu_frames[4:10]
    plain = select(unc, pool, 1)
    labelled = [*cu_frames[:4], pool[plain.indices[0]]]
    write(tmp_path / "pool.extxyz", pool, format="extxyz")
    write(tmp_path / "labelled.extxyz", labelled, format="extxyz")
    out = tmp_path / "selected.extxyz"
    argv = ["select", "--unc", str(tmp_path / "unc"), "--pool", str(tmp_path / "pool.extxyz")]
    argv += ["--labelled", str(tmp_path / "labelled.extxyz"), "--k", "3", "--out", str(out)]
    assert main(argv) == 0
    chosen = read(out, index=":")
    expected = select(load(tmp_path / "unc"), pool, 3, labelled_frames=labelled)
    assert [a.info["selection_index"] for a in chosen] == expected.indices
    scores = [a.info["selection_score"] for a in chosen]
    assert scores == pytest.approx(expected.scores, rel=1e-6)
    assert scores[0] < 0.75 * plain.scores[0]
    bad = ["select", "--features", str(tmp_path / "f.pt"), "--pool", str(tmp_path / "pool.extxyz")]
    torch.save(torch.eye(6, dtype=torch.float64), tmp_path / "f.pt")
    bad += ["--labelled", str(tmp_path / "labelled.extxyz"), "--k", "1", "--out", str(out)]
    assert main(bad) == 2
    assert "--labelled conditions an uncertainty model" in capsys.readouterr().err


def test_cli_select_writes_no_frame_that_adds_nothing(tmp_path, cu_frames, capsys):
    """Features of rank 2 (the other frames repeat them): 2 of the 5 asked are written, and the
    console says so; --k 0 and negative counts are errors that write nothing."""
    pool = tmp_path / "candidates.extxyz"
    write(pool, cu_frames[:6], format="extxyz")
    np.save(tmp_path / "rank2.npy", np.array([[1.0, 0], [0, 1.0], [1, 0], [0, 1], [1, 0], [0, 1]]))
    argv = ["select", "--features", str(tmp_path / "rank2.npy"), "--pool", str(pool)]
    out = tmp_path / "selected.extxyz"
    assert main([*argv, "--k", "5", "--out", str(out)]) == 0
    assert [a.info["selection_index"] for a in read(out, index=":")] == [0, 1]
    printed = capsys.readouterr().out
    assert "selected 2 of 5 asked" in printed and "3 more would add nothing new" in printed
    for k in ("0", "-3"):
        assert main([*argv, "--k", k, "--out", str(tmp_path / "none.extxyz")]) == 2
        assert f"--k: the number of frames to select must be 1 or more, got {k}" in (
            capsys.readouterr().err
        )
    assert not (tmp_path / "none.extxyz").exists()


def test_cli_select_unknown_element_names_the_pool_file_and_frame(
    tmp_path, tiny_mace, cu_frames, capsys
):
    """Frame 3 of the pool is iron: the error names --pool, the file and frame 3 of the file
    (not the frame's index inside a chunk of --chunk-size frames), and nothing is written."""
    from uq_bias.uncertainty import GradientFeatureUncertainty, save

    torch.save(tiny_mace, tmp_path / "model.pt")
    save(GradientFeatureUncertainty(str(tmp_path / "model.pt")).fit(cu_frames[:4]), tmp_path / "u")
    pool = [a.copy() for a in cu_frames[4:9]]
    pool[3].numbers[:] = 26
    write(tmp_path / "pool.extxyz", pool, format="extxyz")
    out = tmp_path / "selected.extxyz"
    argv = ["select", "--unc", str(tmp_path / "u"), "--pool", str(tmp_path / "pool.extxyz")]
    assert main([*argv, "--k", "3", "--out", str(out), "--chunk-size", "2"]) == 2
    err = capsys.readouterr().err
    assert f"pool (--pool) '{tmp_path / 'pool.extxyz'}', frame 3: element(s) ['Fe']" in err
    assert not out.exists()


def test_cli_select_nothing_new_leaves_an_existing_out_alone(tmp_path, cu_frames, capsys):
    """All-zero features: no frame adds anything, 0 are selected; an earlier --out is not
    replaced by an empty file, the output says so, and the exit status 3 stops a script that
    would label the earlier file."""
    write(tmp_path / "pool.extxyz", cu_frames[:4], format="extxyz")
    np.save(tmp_path / "zero.npy", np.zeros((4, 3)))
    out = tmp_path / "selected.extxyz"
    out.write_text("an earlier selection\n")
    argv = ["select", "--features", str(tmp_path / "zero.npy"), "--pool"]
    assert main([*argv, str(tmp_path / "pool.extxyz"), "--k", "2", "--out", str(out)]) == 3
    assert out.read_text() == "an earlier selection\n"
    text = capsys.readouterr().out
    assert "selected 0 of 2 asked" in text and "left as it was" in text
    out.unlink()
    assert main([*argv, str(tmp_path / "pool.extxyz"), "--k", "2", "--out", str(out)]) == 3
    assert not out.exists() and "not written" in capsys.readouterr().out
