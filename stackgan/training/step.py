"""One training step of one stage: update D on matching-aware pairs, then G (and its EMA).

Used by the training loop and by ``benchmarks/train_step.py``, so the benchmark times exactly
what training runs.
"""
from __future__ import annotations

import contextlib
import functools
import math

import torch
import torch.nn.functional as F

from ..augment import augment_for_d, zoom
from ..config import Config
from ..distributed import no_sync, unwrap
from ..models.patch import PatchCritic, critic_d_loss, cut_patches, object_centres, wrong_texts
from ..losses import (contrastive_loss, discriminator_loss_fake, discriminator_loss_real, generator_loss, kl_loss,
                      matching_aware_gradient_penalty, same_rows)

# acc: the share of (real, right text) scored real, and of (fake, text) scored fake
LOGGED = ("D/total", "D/real", "D/wrong", "D/fake", "D/gp", "G/adv", "G/kl", "G/match", "G/recon", "G/latent_kl",
          "G/ms", "G/info", "G/mask", "G/outline", "G/size", "D/contrast", "G/contrast", "G/pick", "G/consistency", "G/swap",
          "G/pair", "D/patch", "G/patch", "D/acc_real", "D/acc_fake")


def _low_res(real: torch.Tensor) -> torch.Tensor:
    """The 64x64 version of a real batch (area averaging, as the data set makes its 64 px images)."""
    return real if real.shape[-1] == 64 else F.interpolate(real, size=64, mode="area")


def _warmed(weight: float, warmup: int, step: int) -> float:
    """``weight``, reached linearly over the first ``warmup`` steps (at once when ``warmup`` is 0)."""
    return weight * min(1.0, step / warmup) if warmup else weight


def match_weight(sc, step: int) -> float:
    """The matching loss's weight at ``step``: ``match_weight``, reached linearly over the first
    ``match_warmup`` steps (a BatchNorm-free D gives G little signal at first, and the frozen
    matcher's gradient alone pulls every sample toward one image: docs/training-recipe.md)."""
    return _warmed(sc.match_weight, sc.match_warmup, step)


def mask_weight(sc, step: int) -> float:
    """The area prior's weight at ``step``: ``mask_weight``, reached linearly over the first
    ``mask_warmup`` steps (at full weight from the start it closes the layer's mask before D asks
    for an object, and a closed sigmoid mask does not open again: docs/training-recipe.md)."""
    return _warmed(sc.mask_weight, sc.mask_warmup, step)


def foil_rows(text: torch.Tensor, wrong: torch.Tensor) -> torch.Tensor:
    """The rows of ``wrong [B, D]`` that are no caption of ``text [B, D]``: with ``data.foil_share`` the
    one-word foils, without the wrong captions that are another image's caption of the batch (``[F, D]``)."""
    same = same_rows(wrong, text).any(1)  # [B]
    return wrong[~same]


MIRRORS = ((1.0, 1.0), (-1.0, 1.0), (1.0, -1.0), (-1.0, -1.0))  # pose_pick_loss: the translation's sign flips
SIDE_MIRRORS = ((1.0, 1.0), (-1.0, 1.0))  # ... with the side logit: as drawn, and across the middle column


def pose_pick_loss(layer, matcher, text: torch.Tensor, share: float = 1.0,
                   drawn_emb: torch.Tensor | None = None) -> torch.Tensor:
    """``stage1.pose_pick_weight``: each object of the layered G's last images redrawn at its translation's
    mirror images (``MIRRORS``: as drawn, x flipped, y flipped, both); the frozen ``matcher`` picks, for
    each image, the one whose similarity to its caption ``text [B, D]`` is highest, and the loss is the mean
    squared distance of the translation ``[B, 2]`` to the pick's (0 where the drawn one wins). A translation
    learns only from the object's edges, so an object on the wrong side of the image stays there (C14:
    "left" and "right" both drawn right); the sign is then learned from the whole reading of the image.
    With the side logit (``model.g_layer_sides``) the matcher compares the drawn placement with its mirror
    across the middle column only, and the loss is the logit's binary cross-entropy to the picked side
    instead. ``share < 1``: only the batch's first ``ceil(share * B)`` images are redrawn and read
    (``stage1.pose_pick_share``; the matcher reads four images per object, two with the side logit).
    ``drawn_emb [M, E]``: the matcher's embeddings of the batch's first ``M`` images as drawn (the matching
    loss's), which stand for the reads of the placement as drawn where ``M >= n``."""
    n = max(1, math.ceil(share * len(text)))
    text = text[:n]
    if drawn_emb is not None and len(drawn_emb) < n:
        drawn_emb = None
    if getattr(layer, "cells", 0):  # model.g_layer_cells: the column and the row, each a choice among A
        return _cell_pick_loss(layer, matcher, text, drawn_emb)
    sides = getattr(layer, "sides", 0)
    flips = torch.tensor(SIDE_MIRRORS if sides else MIRRORS, device=text.device)  # [4 or 2, 2]
    with torch.no_grad():  # flips[0] is the placement as drawn
        scores = torch.stack([_as_drawn(matcher, drawn_emb, text) if i == 0 and drawn_emb is not None else
                              matcher.similarity(layer.redraw(f.expand(n, 2)), text) for i, f in enumerate(flips)])
        pick = flips[scores.argmax(0)]  # [n, 2]
    if sides:  # model.g_layer_sides: the side logit learns the picked side (BCE)
        logits = layer.choice_drawn[:n, 0].float()  # [n]
        drawn = torch.where(logits.detach() >= 0, 1.0, -1.0)
        return F.binary_cross_entropy_with_logits(logits, (drawn * pick[:, 0] > 0).float())
    offset = layer.offset[:n].float()  # [n, 2], with its graph
    return (offset - pick * offset.detach()).square().sum(1).mean()


def _as_drawn(matcher, drawn_emb: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """The matcher's cosine of each of the first ``len(text)`` images as drawn, from their embeddings."""
    return (drawn_emb[:len(text)].detach() * matcher.encode_text(text)).sum(1)


def _cell_pick_loss(layer, matcher, text: torch.Tensor, drawn_emb: torch.Tensor | None = None) -> torch.Tensor:
    """``pose_pick_loss`` with the cell choice: each of the first ``n = len(text)`` objects redrawn in each of
    the ``A`` columns (its row as drawn) and in each of the ``A`` rows (its column as drawn), with ``sizes=K``
    at each of the ``K`` sizes and with ``textures=T`` in each of the ``T`` textures (its cell as drawn); the
    matcher picks the column, the row (the size, the texture) that read best, and the loss is the mean
    cross-entropy of the logits to the picks, every choice weighted the same. The placement as drawn is
    shared by every choice: the matcher reads ``2A - 1`` images per object (``+ K - 1`` with sizes, ``+ T - 1``
    with textures; one fewer with ``drawn_emb``), all of them drawn and read in one batch."""
    n, a = len(text), layer.cells
    logits = layer.choice_drawn[:n].float()  # [n, 2, A]
    drawn = logits.detach().argmax(-1)  # [n, 2]
    # the other choices as (name, logits [n, K]): each picked among its K options, the rest as drawn
    others = [(name, drawn_logits[:n].float()) for name, drawn_logits in
              (("size", layer.size_drawn if getattr(layer, "sizes", 0) else None),
               ("texture", layer.texture_drawn if getattr(layer, "textures", 0) else None))
              if drawn_logits is not None]
    chosen = {name: lg.detach().argmax(-1) for name, lg in others}  # name -> [n]
    # every option to read, as (cell [n, 2], the other choices {name: [n]}): per choice, (drawn + j) mod count
    # for j = 1, 2, ... (j = 0 is the placement as drawn, read first unless drawn_emb stands for it)
    options = [] if drawn_emb is not None else [(drawn, chosen)]
    for axis in (0, 1):
        for j in range(1, a):
            cell = drawn.clone()
            cell[:, axis] = (drawn[:, axis] + j) % a
            options.append((cell, chosen))
    for name, lg in others:
        options += [(drawn, {**chosen, name: (chosen[name] + j) % lg.shape[1]}) for j in range(1, lg.shape[1])]
    with torch.no_grad():
        m = len(options)
        images = layer.redraw_at(torch.cat([cell for cell, _ in options]), repeat=m,
                                 **{name: torch.cat([choice[name] for _, choice in options]) for name in chosen})
        scores = list(matcher.similarity(images, text.repeat(m, 1)).view(m, n))  # per option [n]
        as_drawn = scores.pop(0) if drawn_emb is None else _as_drawn(matcher, drawn_emb, text)  # [n]
        picks = []  # per choice: the option read best
        for now, count in [(drawn[:, 0], a), (drawn[:, 1], a)] + [(chosen[name], lg.shape[1]) for name, lg in others]:
            read = [as_drawn] + [scores.pop(0) for _ in range(count - 1)]
            picks.append((now + torch.stack(read, 1).argmax(1)) % count)  # [n]
    loss = 2 * F.cross_entropy(logits.reshape(2 * n, a), torch.stack(picks[:2], 1).reshape(2 * n))
    for (_, lg), pick in zip(others, picks[2:]):
        loss = loss + F.cross_entropy(lg, pick)
    return loss / (2 + len(others))


def swap_loss(layer, matcher, swaps: torch.Tensor, named: torch.Tensor, share: float = 1.0,
              detach: bool = False, images: torch.Tensor | None = None,
              image_emb: torch.Tensor | None = None) -> torch.Tensor:
    """``stage1.swap_weight``: the frozen ``matcher`` must pick each caption among its word swaps ``swaps
    [B, V, D]`` (the same caption with the texture word swapped for each of the ``V`` textures; ``named
    [B]`` the one it names, -1: none) from the layered G's image redrawn with only its pattern keeping a
    gradient (:meth:`ForegroundLayer.redraw_pattern`): the cross-entropy of the matcher's scaled cosines.
    The swaps differ in one word and the image in nothing but its pattern, so the colour, outline and
    placement drawn cancel: only what tells the textures apart is taught. With the texture choice
    (``model.g_layer_textures``), every object is redrawn in each texture state ``k`` and must pick the
    caption swapped to value ``k``: each state learns its own word from every caption, not only from the
    captions that chose it. The first ``ceil(share * B)`` images; those whose caption names no texture
    are left out (0 when none is left). ``detach``: the pattern reads ``cat(z, c)`` without its graph.
    ``images [B, 3, r, r]`` (``stage2.swap_weight``; ``layer`` unused): the matcher reads these as they are,
    Stage II's images, and every layer that drew them learns (with ``model.stage2_pattern``, Stage II's own
    pattern among them); ``image_emb [m, E]``: the matcher's read of their first ``m`` rows, with its graph (the
    matching loss's), reused where it covers the ``ceil(share * B)`` images."""
    n = max(1, math.ceil(share * len(named)))
    rows = (named[:n] >= 0).nonzero()[:, 0]  # [R]
    if not len(rows):
        return swaps.new_zeros(())
    v = swaps.shape[1]
    with torch.no_grad():
        texts = matcher.encode_text(swaps[rows].flatten(0, 1).float()).view(len(rows), v, -1)  # [R, V, E]
    scale = matcher.logit_scale.exp().clamp(max=100).detach()

    def logits(images: torch.Tensor) -> torch.Tensor:  # [R, V]
        return scale * torch.einsum("re,rve->rv", matcher.encode_image(images[rows].float()), texts)

    if images is not None:
        if image_emb is not None and len(image_emb) >= n:  # already read
            return F.cross_entropy(scale * torch.einsum("re,rve->rv", image_emb[rows], texts), named[rows])
        return F.cross_entropy(logits(images[:n]), named[rows])
    if getattr(layer, "textures", 0):
        loss = 0.0
        for k in range(v):
            state = torch.full((n,), k, dtype=torch.long, device=named.device)
            loss = loss + F.cross_entropy(logits(layer.redraw_pattern(n, state, detach)), state[rows])
        return loss / v
    return F.cross_entropy(logits(layer.redraw_pattern(n, detach=detach)), named[rows])


def image_pair_loss(matcher, fake_emb: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """``stage<N>.image_pair_weight``: each generated image (its frozen-matcher embedding ``fake_emb [n, E]``,
    with its graph) must be nearest, among the batch's real images ``real [B, 3, r, r]``, to the real image whose
    caption it was drawn from (row ``i`` for row ``i``): the cross-entropy of the matcher's scaled cosines (an
    image-to-image contrastive term, as XMC-GAN's between real and generated images of one caption, read in the
    matcher's space). The caption only has to rank first in the matching loss; here G's image must also look,
    to the matcher, like a real image of that caption (its texture drawn as the data draws it)."""
    with torch.no_grad():
        real_emb = matcher.encode_image(real.float())  # [B, E], unit length
    scale = matcher.logit_scale.exp().clamp(max=100).detach()
    target = torch.arange(len(fake_emb), device=fake_emb.device)
    return F.cross_entropy(scale * fake_emb @ real_emb.T, target)


def consistency_loss(high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
    """``stage2.consistency_weight``: the mean L1 distance of Stage II's image ``[B, 3, 256, 256]``, area-resized to
    the Stage-I image's size, to that image ``[B, 3, 64, 64]`` (fixed): Stage II may add detail finer than 64 px,
    not move what Stage I drew (StackGAN++'s colour-consistency term, on the whole low-frequency image)."""
    return F.l1_loss(F.interpolate(high.float(), size=low.shape[-2:], mode="area"), low.detach().float())


class Updater:
    """``updater(real, text, wrong, z, step)`` runs one D update and one G update and returns the
    logged losses as one tensor ``[len(LOGGED)]``, left on the device (reading it would wait for
    the device; the loop reads the sum every ``log_every`` steps).

    ``G`` and ``D`` may be wrapped (DistributedDataParallel, torch.compile): they run the forward
    passes that update their own weights. ``D_for_g`` is the network D that scores fakes in the
    G update, with D's weights frozen there (no weight gradients, no gradient all-reduce); by
    default ``D`` unwrapped. Precision ``bf16`` runs the networks under bf16 autocast;
    ``fp16`` under fp16 autocast with one gradient scaler per network. Losses are fp32.
    """

    def __init__(self, cfg: Config, stage: int, G, D, opt_g, opt_d, *, device: torch.device,
                 encoder=None, matcher=None, ema=None, D_for_g=None):
        self.cfg, self.stage, self.sc = cfg, stage, cfg.stage(stage)
        self.G, self.D, self.opt_g, self.opt_d = G, D, opt_g, opt_d
        self.D_for_g = D_for_g if D_for_g is not None else unwrap(D)
        self.encoder, self.matcher, self.ema, self.device = encoder, matcher, ema, device
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)
        self.autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype else contextlib.nullcontext
        self.critic = self.opt_critic = self.critic_runner = None
        if self.sc.patch_weight:  # stage<N>.patch_weight: the texture critic, with an optimizer like D's
            self.critic = PatchCritic(cfg.model.text_dim).to(device)
            data_parallel = torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1
            self.critic_runner = (torch.nn.parallel.DistributedDataParallel(
                self.critic, device_ids=[device.index] if device.type == "cuda" else None)
                if data_parallel else self.critic)  # its update; G's reads the critic itself (frozen there)
            self.opt_critic = torch.optim.Adam(self.critic.parameters(), lr=self.sc.lr_d,
                                               betas=(self.sc.beta1, self.sc.beta2))
        fp16 = cfg.precision == "fp16"
        self.scaler_g = torch.amp.GradScaler(device.type, enabled=fp16)
        self.scaler_d = torch.amp.GradScaler(device.type, enabled=fp16)

    def state_dict(self) -> dict:
        critic = {} if self.critic is None else {"critic": self.critic.state_dict(),
                                                  "opt_critic": self.opt_critic.state_dict()}
        return {"scaler_g": self.scaler_g.state_dict(), "scaler_d": self.scaler_d.state_dict(), **critic}

    def load_state_dict(self, state: dict) -> None:
        if self.critic is not None and "critic" in state:
            self.critic.load_state_dict(state["critic"])
            self.opt_critic.load_state_dict(state["opt_critic"])
        if state.get("scaler_g"):
            self.scaler_g.load_state_dict(state["scaler_g"])
        if state.get("scaler_d"):
            self.scaler_d.load_state_dict(state["scaler_d"])

    def _info_loss(self, D_heads, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """InfoGAN: the squared error of D's read-back of z's first K dims (0 without an info head)."""
        read = D_heads.info(h) if hasattr(D_heads, "info") else None
        if read is None:
            return torch.zeros((), device=self.device)
        return F.mse_loss(read.float(), z[:, :read.shape[1]].float())

    def _contrast(self, D_heads, h: torch.Tensor, text: torch.Tensor, condition: torch.Tensor,
                  wrong: torch.Tensor, wrong_condition: torch.Tensor, generated: bool = False) -> torch.Tensor:
        """InfoNCE of D's contrastive head: images ``h`` to the batch's texts, and to D's wrong texts
        with ``contrast_wrong``, and to the head's "generated" text with ``model.d_contrast_fake``,
        which is the answer when ``generated`` (D's update on G's images); 0 when it is off."""
        sc = self.sc
        if not sc.contrast_weight:
            return torch.zeros((), device=self.device)
        head = D_heads.contrast
        extra = (head.text(D_heads.text(wrong)), wrong_condition) if sc.contrast_wrong else (None, None)
        return contrastive_loss(head.image(h), head.text(D_heads.text(text)), condition, sc.contrast_temp, *extra,
                                fake=head.fake, generated=generated)

    def _zoomed(self, D, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """D's code of ``x`` for the contrastive head: ``h`` (the code D computed for its other heads), or
        with ``contrast_zoom`` the code of a randomly zoomed copy (stackgan.augment.zoom) in a pass of its own;
        with ``model.d_contrast_trunk=checker`` the code of the head's own encoder (of the zoomed copy)."""
        trunk = getattr(unwrap(D), "contrast_trunk", None)
        if self.sc.contrast_zoom > 1 and self.sc.contrast_weight:
            x = zoom(x, self.sc.contrast_zoom)
        elif trunk is None:
            return h
        return D(x) if trunk is None else trunk(x)

    def _d_view(self, x: torch.Tensor) -> torch.Tensor:  # what D sees: optionally augmented (stackgan.augment)
        sc = self.sc
        return augment_for_d(x, sc.d_translate, sc.d_noise) if sc.d_translate or sc.d_noise else x

    def __call__(self, real: torch.Tensor, text: torch.Tensor, wrong: torch.Tensor, z: torch.Tensor,
                 step: int = 0, swaps: tuple[torch.Tensor, torch.Tensor] | None = None,
                 orders: torch.Tensor | None = None, sizes: torch.Tensor | None = None) -> torch.Tensor:
        cfg, sc, stage = self.cfg, self.sc, self.stage
        G, D, D_heads = self.G, self.D, unwrap(self.D)
        zero = torch.zeros((), device=self.device)

        # --- update D: (real, right) -> 1, (real, wrong) and (fake, right) -> 0 ---------------
        # The real and the fake side each run forward and backward in turn, so that only one of
        # D's graphs is held at a time; their gradients add up to those of the whole loss.
        with self.autocast():
            out = G(z, text)  # GeneratorOutput of either stage
            fake, mu, logvar = out.image, out.mu, out.logvar  # [B, 3, r, r], [B, cond] x 2
            # an area prior on the mask: the layered G's object mask [B, 1, 64, 64] costs where it is not needed
            placed = unwrap(G).foreground.mask if sc.mask_weight > 0 else None
            # a group-lasso prior on the radial outline's harmonics (stage1.outline_weight)
            outline = zero
            if sc.outline_weight > 0:
                fg = unwrap(G).foreground
                target = (outline_targets(fg.radial, orders.device, sc.outline_phase)[orders] if sc.outline_target
                          else None)
                outline = fg.outline_cost(sc.outline_symmetric, orders, target, turned=sc.outline_phase)
            outline_weight = sc.outline_weight if step >= sc.outline_start else 0.0
            # the circumradius held inside the data's range for each image's size word (stage1.size_weight)
            reach = unwrap(G).foreground.size_cost(*size_ranges(sizes.device)[:, sizes]) if sc.size_weight else zero
            if cfg.model.d_text_path == "mu":  # PT: D sees G's CA mean, detached
                right_t = mu.detach()
                with torch.no_grad():
                    shifted = cfg.data.wrong_pairs == "shift" and not cfg.data.foil_share  # foils come in `wrong`
                    wrong_t = right_t.roll(1, 0) if shifted else unwrap(G).ca(wrong)[1]
            else:
                right_t, wrong_t = text, wrong
        # matching-aware gradient penalty on (real image, its text), every gp_every steps, weighted
        # gp_every times (lazy regularisation); the image and text inputs need gradients for it
        penalise = sc.gp_weight > 0 and step % sc.gp_every == 0
        with no_sync(D):  # DDP: reduce once, after the fake side
            with self.autocast():
                real_in, right_in = self._d_view(real), right_t
                if penalise:
                    real_in, right_in = real_in.detach().requires_grad_(True), right_t.detach().requires_grad_(True)
                h_real = D(real_in)  # [B, 8ndf, 4, 4]; computed once, used for right and wrong text
                real_logits = D_heads.cond_logits(h_real, right_in)
                d_real = discriminator_loss_real(real_logits, D_heads.cond_logits(h_real, wrong_t),
                                                 D_heads.uncond_logits(h_real), sc.gan_loss)
                gp = (matching_aware_gradient_penalty(real_logits, (real_in, right_in), sc.gp_power) if penalise
                      else zero)
                contrast_d = self._contrast(D_heads, self._zoomed(D, real, h_real), right_t, text, wrong_t,
                                            wrong)  # D: match real pairs
            self.scaler_d.scale(d_real["total"] + sc.gp_weight * sc.gp_every * gp
                                + sc.contrast_weight * contrast_d).backward()
        del h_real
        with self.autocast():
            h_fake = D(self._d_view(fake.detach()))
            fake_logits = D_heads.cond_logits(h_fake, right_t)
            d_fake = discriminator_loss_fake(fake_logits, D_heads.uncond_logits(h_fake),
                                             sc.gan_loss)
            info_d = self._info_loss(D_heads, h_fake, z)  # the info head learns to read the codes
            fake_d = zero  # with model.d_contrast_fake: G's images pick the head's "generated" text
            if cfg.model.d_contrast_fake and sc.contrast_weight:
                fake_d = self._contrast(D_heads, self._zoomed(D, fake.detach(), h_fake), right_t, text, wrong_t, wrong,
                                        generated=True)
                contrast_d = contrast_d.detach() + fake_d.detach()
        self.scaler_d.scale(d_fake["total"] + sc.info_weight * info_d + sc.contrast_weight * fake_d).backward()
        del h_fake
        d = {**d_real, **d_fake, "total": d_real["total"].detach() + d_fake["total"].detach()}
        self.scaler_d.step(self.opt_d)
        self.scaler_d.update()
        self.opt_d.zero_grad(set_to_none=True)  # free D's gradients while G's update runs

        # --- update the texture critic (stage<N>.patch_weight) on patches at the objects' centres ------------
        patch_d, fake_centres = zero, None
        if self.critic is not None:
            for group in self.opt_critic.param_groups:  # D's learning rate, with its schedule and rollbacks
                group["lr"] = self.opt_d.param_groups[0]["lr"]
            size, jitter = sc.patch_size, max(1, sc.patch_size // 8)
            shift = lambda c: c + torch.randint(-jitter, jitter + 1, c.shape, device=c.device)  # noqa: E731
            fake_centres = shift(object_centres(fake.detach()))  # [B, 2]: G's update cuts the same patches
            real_patches = cut_patches(real, shift(object_centres(real)), size)
            fake_patches = cut_patches(fake.detach(), fake_centres, size)
            patch_d = critic_d_loss(self.critic_runner, real_patches, fake_patches, text,
                                    wrong_texts(text, wrong, swaps), sc.patch_r1)
            patch_d.backward()
            self.opt_critic.step()
            self.opt_critic.zero_grad(set_to_none=True)
            patch_d = patch_d.detach()

        # --- update G: fool D with the right text, keep CA close to N(0, I) ------------------
        frozen = [m for m in (D_heads, self.critic) if m is not None]
        for m in frozen:  # gradients flow through D (and the texture critic) to G; their own are not needed
            m.requires_grad_(False)
        try:
            with self.autocast():
                h_fake = self.D_for_g(self._d_view(fake))
                g_adv = generator_loss(D_heads.cond_logits(h_fake, right_t),
                                       D_heads.uncond_logits(h_fake), sc.gan_loss)
                kl = kl_loss(mu, logvar) if logvar is not None else zero
                info = self._info_loss(D_heads, h_fake, z)  # ... and G to draw them so that it can
                contrast = self._contrast(D_heads, self._zoomed(self.D_for_g, fake, h_fake), right_t, text, wrong_t,
                                          wrong)  # G: draw its caption
                g_total = g_adv + sc.kl_weight * kl + sc.info_weight * info + sc.contrast_weight * contrast
                match, read = zero, None
                if self.matcher is not None:  # with match_foils, D's wrong captions that are not the batch's own
                    foils = foil_rows(text, wrong) if sc.match_foils else None  # (the one-word foils) count too
                    n = max(2, math.ceil(sc.match_share * len(fake)))  # stage<N>.match_share: its first images
                    read = self.matcher.encode_image(fake[:n])  # [n, E]: the pick reuses it for the drawn placement
                    match = self.matcher.loss(fake[:n], text[:n], cfg.data.matcher_hard,
                                              foils=foils, others=text[n:], image_emb=read)
                g_total = g_total + match_weight(sc, step) * match
                pair = zero
                if sc.image_pair_weight:  # G's image near its own caption's real image, in the matcher's space
                    pair = image_pair_loss(self.matcher, read, real)
                    g_total = g_total + sc.image_pair_weight * pair
                pick = zero
                if sc.pose_pick_weight:  # the translation pulled to whichever mirror image the matcher reads best
                    pick = pose_pick_loss(unwrap(G).foreground, self.matcher, text, sc.pose_pick_share,
                                          None if read is None else read.detach())
                    g_total = g_total + sc.pose_pick_weight * pick
                swap = zero
                if sc.swap_weight:  # the pattern alone taught to tell the caption from its texture-word swaps
                    if swaps is None:
                        raise ValueError(f"stage{stage}.swap_weight needs the batch's swapped captions "
                                         "(data.swap_attribute)")
                    swap = (swap_loss(unwrap(G).foreground, self.matcher, *swaps, sc.swap_share, sc.swap_detach)
                            if stage == 1 else swap_loss(None, self.matcher, *swaps, sc.swap_share, images=fake,
                                                         image_emb=read))
                    g_total = g_total + sc.swap_weight * swap
                patch = zero
                if self.critic is not None:  # G's patches scored real by the texture critic (its weights frozen)
                    patch = -self.critic(cut_patches(fake, fake_centres, sc.patch_size), text).mean()
                    g_total = g_total + sc.patch_weight * patch
                recon = latent_kl = zero
                if self.encoder is not None:  # cVAE-GAN: redraw the real image from its own encoded z
                    z_mu, z_logvar = self.encoder(_low_res(real), text)  # [B, z] x 2
                    redrawn = G(self.encoder.sample(z_mu, z_logvar), text).image  # [B, 3, r, r]
                    recon = F.l1_loss(redrawn.float(), real.float())
                    g_total = g_total + sc.recon_weight * recon
                    if stage == 1:
                        latent_kl = kl_loss(z_mu, z_logvar)
                        g_total = g_total + sc.latent_kl_weight * latent_kl
                mask = placed.float().mean() if placed is not None else zero
                g_total = g_total + mask_weight(sc, step) * mask + outline_weight * outline + sc.size_weight * reach
                consistency = zero
                if sc.consistency_weight:  # stage2.consistency_weight: at 64 px, Stage II's image is Stage I's
                    consistency = consistency_loss(fake, out.low)
                    g_total = g_total + sc.consistency_weight * consistency
                ms = zero
                if sc.ms_weight > 0:  # mode seeking (MSGAN): half the captions again, with other noise
                    half = max(1, len(z) // 2)
                    z2 = torch.randn_like(z[:half])
                    other = G(z2, text[:half]).image  # [B/2, 3, r, r]
                    ratio = (fake[:half].float() - other.float()).abs().mean() / (z[:half] - z2).abs().mean()
                    ms = 1.0 / (ratio + 1e-5)  # large when two noises give one image
                    g_total = g_total + sc.ms_weight * ms
        finally:
            for m in frozen:
                m.requires_grad_(True)
        if step >= sc.g_hold:  # (stage<N>.g_hold: G held for the run's first steps, only D learns)
            self.scaler_g.scale(g_total).backward()
            self.scaler_g.step(self.opt_g)
            self.scaler_g.update()
        self.opt_g.zero_grad(set_to_none=True)

        # --- EMA of G's weights -----------------------------------------------------------------
        if self.ema is not None:
            self.ema.update_parameters(unwrap(G))
        acc_real, acc_fake = (real_logits.detach() > 0).float().mean(), (fake_logits.detach() < 0).float().mean()
        return torch.stack([d["total"], d["real"], d["wrong"], d["fake"], gp.detach(), g_adv, kl, match, recon,
                            latent_kl, ms.detach(), info.detach(), mask.detach(), outline.detach(), reach.detach(),
                            contrast_d.detach(),
                            contrast.detach(), pick.detach(), consistency.detach(), swap.detach(), pair.detach(), patch_d,
                            patch.detach(), acc_real, acc_fake]).detach().float()  # [len(LOGGED)]


@functools.lru_cache(maxsize=4)
def size_ranges(device: torch.device) -> torch.Tensor:
    """``[2, 3]``: the lowest and highest circumradius of the Shapes data's small, medium and large objects, in image
    units (half the image's side; ``data.shapes.RADIUS_RANGE`` is in pixels of the 256 px canvas)."""
    from ..data.shapes import ATTRIBUTES, RADIUS_RANGE, SIZE
    return torch.tensor([RADIUS_RANGE[w] for w in ATTRIBUTES["size"]]).T.div(SIZE / 2).to(device)


@functools.lru_cache(maxsize=4)
def outline_targets(harmonics: int, device: torch.device, turned: bool = False) -> torch.Tensor:
    """``[6, K]``: row ``n`` the data's outline amplitudes of the shape with ``n``-fold symmetry (row 0 the
    circle's zeros; rows 1 and 2 unused), indexed by the step's shape orders (``stage1.outline_target``); with
    ``turned`` its coefficients turned to phase 0 (``stage1.outline_phase``)."""
    from ..data.shapes import SYMMETRY, outline_amplitudes, outline_turned
    table = torch.zeros(6, harmonics)
    for shape, n in SYMMETRY.items():
        table[n] = (outline_turned if turned else outline_amplitudes)(shape, harmonics)
    return table.to(device)
