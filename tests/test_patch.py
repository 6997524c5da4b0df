"""The texture critic (stage<N>.patch_weight): where it cuts its patches, its wrong captions, its loss, and that it
learns to read a texture word from a patch."""
import pytest
import torch
import torch.nn.functional as F

from stackgan.config import ConfigError, apply_overrides, get_preset, validate
from stackgan.models.patch import PatchCritic, critic_d_loss, cut_patches, object_centres, wrong_texts


def _scene(cx: int, cy: int, half: int = 6, size: int = 64) -> torch.Tensor:
    """One image [3, size, size]: a background that changes from row to row, a square of side 2 * half at (cx, cy)."""
    image = torch.linspace(-1, 0.5, size)[None, :, None].expand(3, size, size).clone()
    image[0, cy - half:cy + half, cx - half:cx + half] = 1.0  # red channel only
    return image


def test_object_centres_find_the_object_over_a_row_ramp_and_the_middle_of_a_blank_image():
    images = torch.stack([_scene(20, 40), _scene(45, 12), torch.full((3, 64, 64), 0.3)])
    centres = object_centres(images)
    # the square spans pixels cx - 6 .. cx + 5: its centre is cx - 0.5
    assert torch.allclose(centres, torch.tensor([[19.5, 39.5], [44.5, 11.5], [31.5, 31.5]]))


def test_cut_patches_shows_the_pixels_around_the_centre_and_keeps_their_graph():
    images = torch.arange(2 * 3 * 16 * 16, dtype=torch.float32).view(2, 3, 16, 16).requires_grad_(True)
    patches = cut_patches(images, torch.tensor([[5.0, 9.0], [15.0, 0.0]]), 4)  # the second held inside
    assert torch.equal(patches[0], images[0, :, 7:11, 3:7]) and torch.equal(patches[1], images[1, :, 0:4, 12:16])
    patches.sum().backward()
    assert images.grad.sum() == 2 * 3 * 16 and images.grad[0, :, 7:11, 3:7].eq(1).all()
    with pytest.raises(ValueError, match="does not fit"):
        cut_patches(images, torch.zeros(2, 2), 17)


def test_wrong_texts_swap_the_named_texture_for_another_and_keep_the_wrong_caption_elsewhere():
    torch.manual_seed(0)
    b, v, d = 64, 3, 5
    swapped = torch.randn(b, v, d)
    named = torch.randint(-1, v, (b,))
    wrong = torch.randn(b, d)
    out = wrong_texts(swapped[torch.arange(b), named.clamp(min=0)], wrong, (swapped, named))
    for row in range(b):
        if named[row] < 0:
            assert torch.equal(out[row], wrong[row])
        else:
            picked = [k for k in range(v) if torch.equal(out[row], swapped[row, k])]
            assert picked and picked[0] != named[row]
    assert torch.equal(wrong_texts(swapped[:, 0], wrong), wrong)  # without swaps: the wrong captions


def test_critic_loss_is_the_matching_aware_hinge():
    def critic(patch, text):  # a crafted critic: the patch's mean plus the text's sum
        return patch.mean((1, 2, 3)) + text.sum(1)
    real, fake = torch.full((2, 3, 4, 4), 0.5), torch.full((2, 3, 4, 4), -0.25)
    text, wrong = torch.tensor([[0.2], [1.0]]), torch.tensor([[-2.0], [0.0]])
    # (real, text): 0.7, 1.5 -> relu(1 - s): 0.3, 0; (real, wrong): -1.5, 0.5 -> relu(1 + s): 0, 1.5;
    # (fake, text): -0.05, 0.75 -> relu(1 + s): 0.95, 1.75
    expected = (0.3 + 0) / 2 + 0.5 * ((0 + 1.5) / 2 + (0.95 + 1.75) / 2)
    assert critic_d_loss(critic, real, fake, text, wrong).item() == pytest.approx(expected)
    # R1: each real score's gradient with respect to its patch is 1/48 in each of its 48 pixels: |grad|^2 = 1/48
    assert critic_d_loss(critic, real, fake, text, wrong, r1=3.0).item() == pytest.approx(expected + 1.5 / 48)


def _texture(kind: int, n: int, size: int = 16) -> torch.Tensor:
    """``n`` patches of stripes (kind 0) or dots (kind 1) at random phases: [n, 3, size, size]."""
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    out = []
    for _ in range(n):
        dx, dy = torch.randint(0, 6, (2,))
        on = ((x + dx) // 3) % 2 == 1 if kind == 0 else (((x + dx) % 6 < 2) & ((y + dy) % 6 < 2))
        out.append(torch.where(on, 1.0, -1.0).expand(3, size, size))
    return torch.stack(out)


def test_a_trained_critic_reads_the_texture_word_from_the_patch():
    """Trained on real patches only (the wrong caption the other texture word), the critic scores each patch
    higher with its own word than with the other, on new patches."""
    torch.manual_seed(0)
    words = torch.eye(2)  # "striped", "dotted"
    critic = PatchCritic(text_dim=2, width=8)
    opt = torch.optim.Adam(critic.parameters(), lr=2e-3, betas=(0.0, 0.9))
    for _ in range(60):
        kinds = torch.randint(0, 2, (16,))
        patches = torch.cat([_texture(int(k), 1) for k in kinds])
        loss = critic_d_loss(critic, patches, torch.zeros_like(patches), words[kinds], words[1 - kinds])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        kinds = torch.arange(32) % 2
        patches = torch.cat([_texture(int(k), 1) for k in kinds])
        right, other = critic(patches, words[kinds]), critic(patches, words[1 - kinds])
    assert (right > other).float().mean() == 1.0
    assert F.relu(1 - right).mean() < 0.5  # scored real with its own word


def test_patch_config_errors():
    cfg = get_preset("shapes-layered")
    with pytest.raises(ConfigError, match="patch_size"):
        validate(apply_overrides(cfg, ["stage2.patch_weight=1", "stage2.patch_size=300"]))
    with pytest.raises(ConfigError, match="patch_weight"):
        validate(apply_overrides(cfg, ["stage1.patch_weight=-1"]))
    with pytest.raises(ConfigError, match="patch_r1"):
        validate(apply_overrides(cfg, ["stage2.patch_weight=1", "stage2.patch_r1=-1"]))
    validate(apply_overrides(cfg, ["stage1.patch_weight=1", "stage1.patch_size=16"]))
