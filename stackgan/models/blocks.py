"""Building blocks shared by both stages (the generators and discriminators of Zhang et al., ICCV 2017)."""
from __future__ import annotations

import contextlib
import math
import weakref
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


@contextlib.contextmanager
def _keep_batchnorm_buffers(module: nn.Module):
    """Put BatchNorm running statistics back as they were on entry: a recomputed forward pass
    must not count its batch twice."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [[b.clone() for b in m.buffers()] for m in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for m, bufs in zip(norms, saved):
                for b, old in zip(m.buffers(), bufs):
                    b.copy_(old)


def _recompute_contexts(module: nn.Module):  # (first forward, recomputation)
    return contextlib.nullcontext(), _keep_batchnorm_buffers(module)


def _block(module: nn.Module, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
    return module(x, cond) if getattr(module, "conditional", False) else module(x)


def run_up_path(up: nn.Sequential, rgb: nn.Module, x: torch.Tensor, recompute: int = 0,
                cond: torch.Tensor | None = None) -> torch.Tensor:
    """``rgb(up(x))``, each conditional up-block also given ``cond [B, K]``. In training with
    gradients on, the last ``recompute`` modules of ``up`` keep only their input (the last
    together with ``rgb``): their activations are computed again in the backward pass instead of
    being held from the forward pass through D's update (torch's activation checkpointing). The
    same values and gradients; less memory, one more forward pass of those blocks. BatchNorm
    running statistics are updated once."""
    n = min(recompute, len(up)) if torch.is_grad_enabled() and up.training else 0
    for i in range(len(up) - n):
        x = _block(up[i], x, cond)
    if n == 0:
        return rgb(x)
    for i in range(len(up) - n, len(up)):
        last = i == len(up) - 1

        def segment(h, c, block=up[i], last=last):
            h = _block(block, h, c)
            return rgb(h) if last else h

        seg_modules = nn.Sequential(up[i], rgb) if last else up[i]
        x = checkpoint(segment, x, cond, use_reentrant=False, context_fn=partial(_recompute_contexts, seg_modules))
    return x


class CondAffine(nn.Module):
    """Per-channel scale and shift predicted from a condition: ``x * (1 + g(c)) + b(c)``, each of g
    and b a Linear-ReLU-Linear. The last layers start at zero, so the block starts as the identity.
    DF-GAN's affine (Tao et al., CVPR 2022); BigGAN's conditional BatchNorm when it follows a
    BatchNorm."""

    def __init__(self, cond_dim: int, channels: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or max(channels, 32)
        self.gain = nn.Sequential(nn.Linear(cond_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))
        self.bias = nn.Sequential(nn.Linear(cond_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels))
        self.start_as_identity()

    def start_as_identity(self) -> None:
        for head in (self.gain, self.bias):
            nn.init.zeros_(head[-1].weight)
            nn.init.zeros_(head[-1].bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        gain = self.gain(cond.to(x.dtype))[:, :, None, None]  # [B, C, 1, 1]
        bias = self.bias(cond.to(x.dtype))[:, :, None, None]
        return x * (1.0 + gain) + bias  # [B, C, H, W]


def coordinate_grid(h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """``[1, 2, h, w]``: each pixel's x (channel 0) and y (channel 1), from -1 at the first pixel
    centre to 1 at the last, with ``like``'s dtype and device."""
    ys = torch.linspace(-1.0, 1.0, h, dtype=like.dtype, device=like.device)
    xs = torch.linspace(-1.0, 1.0, w, dtype=like.dtype, device=like.device)
    return torch.stack([xs[None, :].expand(h, w), ys[:, None].expand(h, w)])[None]


def conv3x3(in_ch: int, out_ch: int, bias: bool = False) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 3, 1, 1, bias=bias)


class UpBlock(nn.Sequential):
    """Nearest-neighbour x2, 3x3 conv (no bias), BN, ReLU. With ``cond_dim > 0`` (not in the
    paper) a :class:`CondAffine` after the BN modulates the block by the condition given to
    ``forward(x, cond)``: the sentence (and z) reach every resolution, not only the 4x4 input.

    The upsampling and the conv run as one transposed conv (:func:`upsample_conv3x3`): the same
    function of the same weights, at less than half the arithmetic. ``fuse_upsampling = False``
    on an instance runs the layers one by one instead (as the reference code does).

    With ``coords=True`` (not in the paper) the conv also sees two channels holding each pixel's
    x and y in [-1, 1] (CoordConv, Liu et al., NeurIPS 2018): ``conv(up(x)) + coord(grid)``, where
    ``coord`` is a 3x3 conv of the two coordinate channels. A ReLU of "x minus a centre the
    condition put into the channels" is a half-plane at the right place, and a few of them make
    the edges and corners of a shape, which a plain conv stack must build from its up-sampling
    pattern alone.
    """

    fuse_upsampling = True

    def __init__(self, in_ch: int, out_ch: int, cond_dim: int = 0, coords: bool = False):
        layers = [nn.Upsample(scale_factor=2, mode="nearest"), conv3x3(in_ch, out_ch), nn.BatchNorm2d(out_ch),
                  nn.ReLU(inplace=True)]
        super().__init__(*layers, *([CondAffine(cond_dim, out_ch)] if cond_dim else []))
        self.conditional = cond_dim > 0
        if coords:  # appended last: the indices of the layers above stay as they are
            self.add_module("coord", conv3x3(2, out_ch))

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        up, conv, bn, act = self[0], self[1], self[2], self[3]
        if self.conditional and cond is None:
            raise ValueError("this up-block is conditional: call it with (x, cond)")
        if not self.fuse_upsampling:
            h = conv(up(x))
        else:
            frozen = not (torch.is_grad_enabled() and conv.weight.requires_grad) and not torch.compiler.is_compiling()
            kernel = self._frozen_kernel(conv.weight) if frozen and min(x.shape[-2:]) >= FUSED_MIN_SIZE else None
            h = upsample_conv3x3(x, conv.weight, kernel)  # [B, out, 2H, 2W]
        if "coord" in self._modules:
            h = h + self.coord(coordinate_grid(h.shape[-2], h.shape[-1], h))  # [1, out, 2H, 2W] broadcast
        h = bn(h)
        if self.conditional:
            h = self[4](h, cond)
        return act(h)

    def __getstate__(self):  # pickling (torch.save of a whole network) leaves the kernel cache out
        state = super().__getstate__()
        return {k: v for k, v in state.items() if k != "_kernel"}

    def _frozen_kernel(self, weight: torch.Tensor) -> torch.Tensor:
        """The transposed conv's kernel for weights that get no gradient (sampling, Stage II's
        frozen Stage I), made once and again only when the weights change in place (their
        version counter) or are replaced."""
        key = (weight.data_ptr(), weight._version, weight.dtype, weight.device)
        cached = self.__dict__.get("_kernel")  # (weak reference to the weight, key, kernel)
        if cached is None or cached[0]() is not weight or cached[1] != key:
            cached = (weakref.ref(weight), key, transposed_kernel(weight).contiguous(memory_format=torch.channels_last))
            self.__dict__["_kernel"] = cached
        return cached[2]


# Nearest x2 upsampling then a 3x3 conv: along each axis, an even output row sees input rows
# (i-1, i, i) through taps (w0, w1, w2) and an odd one rows (i, i, i+1). As a stride-2
# transposed conv the 1-D kernel is (w2, w1 + w2, w0 + w1, w0) = _UP_TAPS @ (w0, w1, w2).
FUSED_MIN_SIZE = 8  # smaller inputs are upsampled and convolved (upsample_conv3x3)
_UP_TAPS = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


def transposed_kernel(weight: torch.Tensor) -> torch.Tensor:
    """The 4x4 stride-2 transposed-conv kernel ``[I, O, 4, 4]`` of a 3x3 conv ``weight [O, I, 3, 3]``
    applied after nearest x2 upsampling."""
    taps = _UP_TAPS.to(weight)
    return torch.einsum("ai,oIij,bj->Ioab", taps, weight, taps)


def upsample_conv3x3(x: torch.Tensor, weight: torch.Tensor, kernel: torch.Tensor | None = None) -> torch.Tensor:
    """``conv2d(upsample_nearest(x, 2), weight, padding=1)`` for a 3x3 ``weight [O, I, 3, 3]``,
    computed as one stride-2 transposed conv with 4x4 kernels on ``x [B, I, H, W]``: 16
    multiply-adds per input pixel and channel pair instead of 36. ``kernel`` is
    ``transposed_kernel(weight)`` where the caller has it already. Inputs under 8x8, where
    oneDNN's transposed conv was measured no faster, are upsampled and convolved. The choice
    never depends on the batch size, so an image does not depend on the batch it is drawn in."""
    if min(x.shape[-2:]) < FUSED_MIN_SIZE:
        return F.conv2d(F.interpolate(x, scale_factor=2, mode="nearest"), weight, padding=1)
    return F.conv_transpose2d(x, transposed_kernel(weight) if kernel is None else kernel, stride=2, padding=1)


class FusionUpBlock(nn.Module):
    """DF-GAN's generator block (Tao et al., CVPR 2022), without any normalisation: nearest x2,
    then ``shortcut(x) + residual(x, cond)``. The residual branch is two rounds of "fuse, 3x3
    conv", where fusing is ``affine, LeakyReLU, affine, LeakyReLU`` with each affine's scale and
    shift predicted from the condition (:class:`CondAffine`, starting as the identity); the
    shortcut is a 1x1 conv when the width changes. The condition reaches every pixel of every
    resolution, and no statistic of the batch enters an image."""

    conditional = True

    def __init__(self, in_ch: int, out_ch: int, cond_dim: int):
        super().__init__()
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()
        self.fuse = nn.ModuleList([CondAffine(cond_dim, ch) for ch in (in_ch, in_ch, out_ch, out_ch)])
        self.conv1 = conv3x3(in_ch, out_ch, bias=True)
        self.conv2 = conv3x3(out_ch, out_ch, bias=True)

    def _fuse(self, h: torch.Tensor, cond: torch.Tensor, first: int) -> torch.Tensor:
        h = F.leaky_relu(self.fuse[first](h, cond), 0.2)
        return F.leaky_relu(self.fuse[first + 1](h, cond), 0.2)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        # the fusion (per-channel affine, pointwise activation) and the 1x1 shortcut commute with
        # nearest upsampling, so they run at the input size and the first conv is the fused
        # upsample + conv (upsample_conv3x3): the same function at less arithmetic
        h = upsample_conv3x3(self._fuse(x, cond, 0), self.conv1.weight) + self.conv1.bias[:, None, None]
        h = self.conv2(self._fuse(h, cond, 2))  # [B, out, 2H, 2W]
        return F.interpolate(self.shortcut(x), scale_factor=2, mode="nearest") + h


class ResBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, add the input, ReLU."""

    def __init__(self, ch: int):
        super().__init__()
        self.body = nn.Sequential(
            conv3x3(ch, ch), nn.BatchNorm2d(ch), nn.ReLU(inplace=True),
            conv3x3(ch, ch), nn.BatchNorm2d(ch),
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


class DownBlock(nn.Sequential):
    """4x4 stride-2 conv, optional BN, LeakyReLU(0.2): halves the resolution."""

    def __init__(self, in_ch: int, out_ch: int, bn: bool = True):
        layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, 4, 2, 1, bias=False)]
        if bn:
            layers.append(nn.BatchNorm2d(out_ch))
        layers.append(nn.LeakyReLU(0.2, inplace=True))
        super().__init__(*layers)


class Blur(nn.Module):
    """A fixed 3x3 binomial low-pass filter (``[1, 2, 1]`` outer ``[1, 2, 1]`` / 16), per channel,
    edges replicated. Before a stride-2 conv it is the anti-aliased down-sampling of Zhang (ICML
    2019) and StyleGAN2's D: the conv no longer aliases, and D's gradient with respect to its
    input, which is what G learns from, loses its checkerboard component (the blur's transpose
    is the same blur). No weights to learn."""

    def __init__(self):
        super().__init__()
        k = torch.tensor([1.0, 2.0, 1.0])
        self.register_buffer("kernel", (k[:, None] * k[None, :] / 16.0)[None, None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        x = F.pad(x, (1, 1, 1, 1), mode="replicate")
        return F.conv2d(x, self.kernel.to(x.dtype).expand(c, 1, 3, 3), groups=c)


def blur_downsampling(module: nn.Module) -> None:
    """Put a :class:`Blur` in front of every :class:`DownBlock` of ``module`` (in place)."""
    for m in module.modules():
        if isinstance(m, DownBlock) and not isinstance(m[0], Blur):
            m.insert(0, Blur())


class MinibatchStd(nn.Module):
    """Appends one feature map: the standard deviation of each feature over groups of ``group``
    samples, averaged over features and positions (Karras et al., ICLR 2018)."""

    def __init__(self, group: int = 4):
        super().__init__()
        self.group = group

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        g = min(self.group, b)
        if b % g:
            g = math.gcd(b, g)
        y = x.float().view(g, b // g, c, h, w)  # sample i is in group i % (b / g)
        std = (y.var(0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # [B / g]
        feat = std.repeat(g)[:, None, None, None].expand(b, 1, h, w).to(x.dtype)  # [B, 1, H, W]
        return torch.cat([x, feat], dim=1)  # [B, C + 1, H, W]


class ConditionalHead(nn.Module):
    """D's matching-aware head: image code [B, C, 4, 4] + text code [B, T] -> one logit.

    The text code is replicated to 4x4 and depth-concatenated; a conv (PT 3x3, TF 1x1) mixes
    both, then a 4x4 conv gives the logit. With ``text_dim=0`` it is the unconditional head.
    ``projection=True`` (not in the paper) adds the projection term ``<W text, sum_xy h>`` of the
    projection discriminator (Miyato & Koyama, ICLR 2018): a direct, linear path from the match
    of text and image features to the logit, and so to G's gradient.
    """

    def __init__(self, img_ch: int, text_dim: int, kernel: int = 3, projection: bool = False):
        super().__init__()
        self.text_dim = text_dim
        self.project = nn.Linear(text_dim, img_ch, bias=False) if projection and text_dim > 0 else None
        if text_dim > 0:
            self.joint = nn.Sequential(
                nn.Conv2d(img_ch + text_dim, img_ch, kernel, 1, kernel // 2, bias=False),
                nn.BatchNorm2d(img_ch),
                nn.LeakyReLU(0.2, inplace=True),
            )
        else:
            self.joint = nn.Identity()
        self.out = nn.Conv2d(img_ch, 1, 4, 4)

    def forward(self, h: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        image = h
        if self.text_dim > 0:
            t = text[:, :, None, None].expand(-1, -1, h.shape[2], h.shape[3])  # [B, T, 4, 4]
            h = self.joint(torch.cat([h, t.to(h.dtype)], dim=1))  # [B, C, 4, 4]
        logit = self.out(h).flatten()  # [B]
        if self.project is not None:
            logit = logit + (self.project(text.to(image.dtype)) * image.sum((2, 3))).sum(1)  # [B]
        return logit


class ContrastHead(nn.Module):
    """Embeddings for a contrastive loss inside D (not in the paper; XMC-GAN, Zhang et al., CVPR 2021):
    ``image(h)`` maps D's code ``[B, C, 4, 4]`` (flattened, so that where things are counts) to
    ``[B, dim]``; ``text(t)`` maps D's text code ``[B, T]`` to ``[B, dim]``. Trained by D on real
    pairs and used by G on its own (stackgan.losses.contrastive_loss). ``fake=True`` adds ``fake``,
    a learned text embedding that D trains G's images to pick (and real images not to).

    Example::

        head = ContrastHead(128, 64, dim=32)
        head.image(torch.randn(4, 128, 4, 4)).shape, head.text(torch.randn(4, 64)).shape  # [4, 32] each
    """

    def __init__(self, img_ch: int, text_dim: int, dim: int = 128, fake: bool = False):
        super().__init__()
        self.image = nn.Sequential(nn.Flatten(), nn.Linear(img_ch * 16, dim))
        self.text = nn.Linear(text_dim, dim)
        # a learned "generated image" text embedding [dim] (stackgan.losses.contrastive_loss's ``fake``)
        self.fake = nn.Parameter(torch.randn(dim)) if fake else None


CHECKER_INPUT = 128  # the attribute checker's (and its layout's) input resolution


def image_trunk(kind: str, widths: tuple[int, ...], size: int = 64) -> tuple[nn.Sequential, int, int]:
    """An image encoder ``[B, 3, size, size] -> [B, C, side, side]`` and its ``(C, side)``: ``strided``, one
    4x4 stride-2 conv stage per width (BatchNorm, LeakyReLU); ``checker``, the attribute checker's layout
    (the image enlarged to 128 px where smaller, a 4x4 stem and 3x3 convs, BatchNorm, ReLU, the last stage stride 1,
    pooled to 4x4)."""
    layers, cin = [], 3
    if kind == "strided":
        for w in widths:  # stride 2 each: 64 -> 4 with four stages
            layers += [nn.Conv2d(cin, w, 4, 2, 1, bias=False), nn.BatchNorm2d(w), nn.LeakyReLU(0.2, inplace=True)]
            cin = w
        side = size // 2 ** len(widths)
    elif kind == "checker":
        if size < CHECKER_INPUT:  # 64 px enlarged 2x: the checker's resolution
            layers.append(nn.Upsample(size=CHECKER_INPUT, mode="bilinear"))
        for i, w in enumerate(widths):
            last = i == len(widths) - 1 and len(widths) > 1
            layers += [nn.Conv2d(cin, w, 4 if i == 0 else 3, 1 if last else 2, 1, bias=False),
                       nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            cin = w
        layers.append(nn.AdaptiveAvgPool2d(4))
        side = 4
    else:
        raise ValueError(f"an image trunk is 'strided' or 'checker', got {kind!r}")
    return nn.Sequential(*layers), cin, side


# Upsample(2x, bilinear, align_corners=False) then a 4-tap stride-2 conv with padding 1, along one axis, as a
# 3-tap stride-1 conv on the small input: row j of the output reads input rows j - 1, j, j + 1 with these
# weights of the four taps (interior rows); at the first and last row the enlargement repeats the edge pixel
# and the conv's zero padding drops one tap, which changes only the middle row's weights (_EDGE_*: the change)
_BILINEAR_TAPS = torch.tensor([[0.75, 0.25, 0.0, 0.0], [0.25, 0.75, 0.75, 0.25], [0.0, 0.0, 0.25, 0.75]])
_EDGE_FIRST = torch.tensor([[0.0, 0.0, 0.0, 0.0], [-0.25, 0.25, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
_EDGE_LAST = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.25, -0.25], [0.0, 0.0, 0.0, 0.0]])


class _EnlargedConv(torch.autograd.Function):
    """:meth:`FoldedTrunk.first_parts` summed, with a gradient for the image only (the weights are frozen):
    the edge corrections are added in place, and their gradients read only the edge rows of the output's
    gradient, so neither pass copies the whole feature map for them."""

    @staticmethod
    def forward(ctx, x, parts, bias):
        ctx.parts, ctx.shape = parts, x.shape
        (_, w, pad), rest = parts[0], parts[1:]
        out = F.conv2d(x, w, bias, padding=pad)
        for (r, c), k, pad in rest:
            out[:, :, r, c] += F.conv2d(x[:, :, r, c], k, padding=pad)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (_, w, pad), rest = ctx.parts[0], ctx.parts[1:]
        gx = torch.nn.grad.conv2d_input(ctx.shape, w, grad, padding=pad)
        for (r, c), k, pad in rest:
            part = grad[:, :, r, c]
            shape = (*ctx.shape[:2], part.shape[2] if r == slice(None) else 1, part.shape[3] if c == slice(None) else 1)
            gx[:, :, r, c] += torch.nn.grad.conv2d_input(shape, k, part, padding=pad)
        return gx, None, None


class FoldedTrunk(nn.Module):
    """An eval-mode :func:`image_trunk` computed with fewer operations, for a frozen network read many times
    a step (the image-text matcher): each BatchNorm folded into its conv's weights and a bias, and the
    ``checker`` layout's 2x bilinear enlargement folded into its first conv (a 3x3 stride-1 conv on the
    small image, with its first and last rows and columns corrected: the same numbers as enlarging first,
    up to float rounding, without the 4x larger image). Its tensors are not saved (non-persistent buffers):
    the trunk it was made from stays the model's state.

        fast = FoldedTrunk(trunk.eval())      # fast(x) == trunk(x) up to rounding; gradients flow to x
    """

    def __init__(self, trunk: nn.Sequential):
        super().__init__()
        layers, self.steps = list(trunk), []
        self.enlarge = isinstance(layers[0], nn.Upsample)
        self.up_size = None
        if self.enlarge:
            up, layers = layers[0], layers[1:]
            first = layers[0]
            if (up.mode != "bilinear" or up.align_corners or up.size is None or first.kernel_size != (4, 4)
                    or first.stride != (2, 2) or first.padding != (1, 1)):
                raise ValueError("FoldedTrunk folds an enlargement to a given size (bilinear) only into a 4x4 "
                                 "stride-2 conv with padding 1 (the checker layout)")
            self.up_size = up.size
        i = n = 0
        while i < len(layers):
            layer = layers[i]
            if isinstance(layer, nn.Conv2d):
                norm = layers[i + 1] if i + 1 < len(layers) and isinstance(layers[i + 1], nn.BatchNorm2d) else None
                w, b = self._fold(layer, norm)
                if n == 0 and self.enlarge:  # [O, C, 4, 4] -> the interior 3x3 and the edges' corrections
                    a, ef, el = _BILINEAR_TAPS.to(w), _EDGE_FIRST.to(w), _EDGE_LAST.to(w)
                    fixes = [torch.einsum("pa,ocab,qb->ocpq", r, w, c) for r in (ef, el, a) for c in (ef, el, a)]
                    for e, fix in enumerate(fixes[:-1]):  # (first, last, every row) x (first, last, every column)
                        self.register_buffer(f"edge{e}", fix.contiguous(), persistent=False)
                    w = torch.einsum("pa,ocab,qb->ocpq", a, w, a)
                self.register_buffer(f"w{n}", w.contiguous(), persistent=False)
                self.register_buffer(f"b{n}", b, persistent=False)
                stride, padding = (1, 1) if n == 0 and self.enlarge else (layer.stride, layer.padding)
                self.steps.append(("conv", n, stride, padding))
                n += 1
                i += 2 if norm is not None else 1
                continue
            if isinstance(layer, (nn.ReLU, nn.LeakyReLU)):
                self.steps.append(("act", getattr(layer, "negative_slope", 0.0)))
            elif isinstance(layer, nn.AdaptiveAvgPool2d):
                self.steps.append(("pool", layer.output_size))
            else:
                raise ValueError(f"FoldedTrunk cannot fold a {type(layer).__name__}")
            i += 1

    @staticmethod
    def _fold(conv: nn.Conv2d, norm: nn.BatchNorm2d | None) -> tuple[torch.Tensor, torch.Tensor]:
        w = conv.weight.detach().float()
        b = conv.bias.detach().float() if conv.bias is not None else torch.zeros(len(w), device=w.device)
        if norm is None:
            return w, b
        scale = norm.weight.detach().float() / (norm.running_var.float() + norm.eps).sqrt()
        return w * scale[:, None, None, None], (b - norm.running_mean.float()) * scale + norm.bias.detach().float()

    def first_parts(self) -> list[tuple[tuple[slice, slice], torch.Tensor, tuple[int, int]]]:
        """The enlarged first conv as parts: ``((rows, columns), weights, padding)``, the interior weights on
        the whole image first, then each edge's correction, which reads only its edge row (column) of the
        image through that axis's middle tap."""
        every, ends = slice(None), (slice(0, 1), slice(-1, None))  # all rows / columns; the first, the last
        parts = [((every, every), self.w0, (1, 1))]
        for e, (r, c) in enumerate([(r, c) for r in (*ends, every) for c in (*ends, every)][:-1]):
            k = getattr(self, f"edge{e}")
            k = k if r == every else k[:, :, 1:2]
            k = k if c == every else k[:, :, :, 1:2]
            parts.append(((r, c), k, (int(r == every), int(c == every))))
        return parts

    def _first(self, x: torch.Tensor) -> torch.Tensor:
        """The enlargement and first conv, on the small image ``[B, C, S, S]`` (enlarged to ``2S``)."""
        size = self.up_size if isinstance(self.up_size, (tuple, list)) else (self.up_size, self.up_size)
        if tuple(size) != (2 * x.shape[-2], 2 * x.shape[-1]):
            raise ValueError(f"FoldedTrunk folds a 2x enlargement to {tuple(size)} px; got {tuple(x.shape[-2:])} px")
        return _EnlargedConv.apply(x, self.first_parts(), self.b0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for step in self.steps:
            if step[0] == "conv":
                _, n, stride, padding = step
                if n == 0 and self.enlarge:
                    x = self._first(x)
                else:
                    x = F.conv2d(x, getattr(self, f"w{n}"), getattr(self, f"b{n}"), stride, padding)
            elif step[0] == "act":  # in place, on a conv's fresh output (which no backward pass needs)
                x = F.leaky_relu_(x, step[1]) if step[1] else F.relu_(x)
            else:
                x = F.adaptive_avg_pool2d(x, step[1])
        return x


def init_weights(module: nn.Module) -> None:
    """Conv / linear weights N(0, 0.02); BN weight N(1, 0.02), bias 0 (reference init)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    for m in module.modules():  # modulations start as the identity
        if isinstance(m, CondAffine):
            m.start_as_identity()
