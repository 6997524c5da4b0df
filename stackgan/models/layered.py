"""A foreground layer drawn in its own frame and placed by a predicted affine transform.

Not in the paper: LR-GAN's layered composition (Yang et al., ICLR 2017), one foreground layer.
The generator's usual path draws the background; a second, small path draws the object's colour
and a soft mask in a canonical frame (the object upright, centred, filling the frame); a pose
head predicts a scale, a rotation and a translation from ``cat(z, c)``; a spatial transformer
(``affine_grid`` + ``grid_sample``, Jaderberg et al., NeurIPS 2015) puts the layer in place:

    image = mask * foreground + (1 - mask) * background

The object's outline is then learned once, in one frame, instead of once per position, size and
rotation by a stack of convolutions (docs/training-recipe.md, eighth round).
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..config import CHOICES, parse_pattern_waves
from ..errors import ConfigError
from .blocks import CondAffine, UpBlock, conv3x3

CANVASES = CHOICES["g_layer_canvas"]  # how the object is drawn in its frame
BACKGROUNDS = CHOICES["g_layer_background"]  # what lies under the layer: the usual path, or SmoothBackground
CANVAS_SIZE = 32  # the canvas's pixels per side
MLP_LAYERS = 4  # the implicit canvas's hidden layers
TEMPLATE_GAIN = 10.0  # mask templates are stored over this factor: Adam moves a logit by about gain x lr per step
TEMPLATE_LIMIT = 6.0  # ... and their logits are bounded by LIMIT * tanh(. / LIMIT): a saturated pixel still learns
TEMPLATE_LUMPS = 2.5  # ... and start as discs plus this much smooth (4 x 4, enlarged) noise, each its own
TEMPLATE_SIZE = 16  # ... and drawn at 16 x 16, enlarged bilinearly to the canvas: smooth outlines, fewer pixels
RADIAL_R0 = 0.6  # model.g_layer_radial: the outline's radius (in the canvas's [-1, 1] frame) before it learns
SHARP_EDGE = 4.0  # model.stage2_sharp: the mask's logit rises this much per image pixel across the edge (0.05 to
#   0.95 over 1.5 px; Shapes' edges, drawn 4x supersampled, rise within one pixel)
PATTERN_FREQ = 50.0  # model.g_layer_pattern: wave vectors are stored over this factor (radians per image half-width:
#   50 is a period of 4 px at 64 px), so that Adam moves a frequency by about 50 x lr per step
PATTERN_BIAS = -3.0  # ... and the pattern map starts at sigmoid(-3) = 0.05 everywhere: nearly solid, still learning
SIDE_SHARPNESS = 10.0  # model.g_layer_sides: the distance from the middle is softplus(10 t) / 10
SIDE_GAIN = 10.0  # ... and the side logits are stored over this factor: Adam moves a logit about 10x faster
CELL_SPACING0 = 0.3  # model.g_layer_cells: the distance between neighbouring cells' points before it learns
TEXTURE_AMP = 4.0  # model.g_layer_textures: a texture state starts with its waves at this amplitude
TEXTURE_GAIN = 10.0  # ... and the textures' states are stored over this factor: Adam moves them about 10x faster
PATTERN_TEXT_GAIN = 10.0  # the pattern head's weights on the sentence (pattern_text) are stored over this factor
SIZE_STEP0 = 0.4  # model.g_layer_sizes: the log-scale between neighbouring sizes before it learns (x1.5)
RMS_RADIUS = 0.5  # with normalize: the canvas mask's RMS radius (in its [-1, 1] frame) that scale 1 places as is


def fourier_features(size: int, octaves: int = 4) -> torch.Tensor:
    """``[1, 2 + 4 * octaves, size, size]``: each pixel's ``(u, v)`` in [-1, 1] and ``sin``, ``cos`` of
    ``pi 2^k u`` and ``pi 2^k v`` for ``k < octaves`` (pixel centres, as ``affine_grid`` places them)."""
    t = (torch.arange(size, dtype=torch.float32) * 2 + 1) / size - 1
    v, u = torch.meshgrid(t, t, indexing="ij")
    feats = [u, v]
    for k in range(octaves):
        for x in (u, v):
            feats += [torch.sin(math.pi * 2 ** k * x), torch.cos(math.pi * 2 ** k * x)]
    return torch.stack(feats)[None]


class SmoothBackground(nn.Module):
    """``cat(z, c) [B, K]`` -> a background ``[B, 3, size, size]`` that cannot hold an object: one linear
    layer to a ``3 x grid x columns`` image (tanh), bilinearly enlarged. A full-resolution background path can
    draw the object itself and leave the foreground layer unused; this one can draw only a colour
    and a slow gradient (a Shapes background: a colour times a vertical ramp). With ``columns=1``
    (``model.g_layer_background=vertical``) it varies only from top to bottom, so that it cannot put a
    blob of the object's colour where the object goes either (the 4x4 one can: docs/training-recipe.md,
    eleventh round). With ``ramp=True`` (``model.g_layer_background=ramp``) it is a top and a bottom colour
    with a linear ramp between them: no horizontal band of any colour either (twenty-first round).

    Example::

        bg = SmoothBackground(228)
        bg(torch.randn(2, 228)).shape  # torch.Size([2, 3, 64, 64])
    """

    def __init__(self, in_dim: int, size: int = 64, grid: int = 4, columns: int | None = None, ramp: bool = False):
        super().__init__()
        if ramp:  # model.g_layer_background=ramp: a top and a bottom colour, linear in between (no band fits)
            grid, columns = 2, 1
        self.size, self.grid, self.columns, self.ramp = size, grid, grid if columns is None else columns, ramp
        self.fc = nn.Linear(in_dim, 3 * grid * self.columns)

    def forward(self, zc: torch.Tensor, size: int | None = None) -> torch.Tensor:
        """``size``: the side in pixels (default: the one it was made with)."""
        low = torch.tanh(self.fc(zc)).view(-1, 3, self.grid, self.columns)  # [B, 3, 4 or 2, 4 or 1]
        # the ramp's two colours sit on the first and last rows' centres: linear over the whole height
        return F.interpolate(low, size=size or self.size, mode="bilinear", align_corners=self.ramp)


SYMMETRY_MIN = 0.05  # outline_cost(symmetric=True): a strongest harmonic under this (log-radius) is a circle's lump


def harmonic_basis(angle: torch.Tensor, harmonics: int) -> torch.Tensor:
    """``cos k theta`` then ``sin k theta``, k = 1..``harmonics``, at the angles ``angle [N, H, W]``: ``[N, 2K, H, W]``,
    the basis :func:`outline_radius` reads."""
    k = torch.arange(1, harmonics + 1, device=angle.device, dtype=torch.float32)[None, :, None, None]
    a = angle.float()[:, None]  # [N, 1, H, W]
    return torch.cat([torch.cos(k * a), torch.sin(k * a)], dim=1)


def outline_radius(coef: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """The radial outline's radius ``RADIAL_R0 * exp(sum_k a_k cos k theta + b_k sin k theta)`` ``[B, H, W]`` from its
    coefficients ``[B, 2K]`` (the ``K`` cosines' first) and the basis ``[B or 1, 2K, H, W]`` (``cos k theta`` then
    ``sin k theta`` at each point's angle)."""
    return RADIAL_R0 * torch.exp(torch.einsum("bk,bkhw->bhw", coef, basis.expand(len(coef), -1, -1, -1)))


class ForegroundLayer(nn.Module):
    """``cat(z, c) [B, K]`` and a background ``[B, 3, S, S]`` -> the composed image ``[B, 3, S, S]``.

    With ``canvas="conv"`` the foreground path is an FC to ``4ngf x 4 x 4`` and three up-blocks to
    32 x 32 pixels, then a 3x3 conv to RGB (tanh) and a mask logit. With ``canvas="mlp"`` it is
    implicit (CIPS, Anokhin et al., CVPR 2021, on the canvas): one MLP of width ``2ngf`` maps each
    pixel's coordinates and their Fourier features to RGB and a mask logit, every layer modulated
    by ``cat(z, c)`` (FiLM, starting as the identity). A ReLU of a linear function of ``(u, v)`` is a
    half-plane, so straight edges and corners are what this canvas draws most easily. With
    ``cond_dim > 0`` the conv canvas's up-blocks are modulated by ``cat(z, c)`` as the main path's
    are (``model.g_fusion``).

    The pose head is one linear layer to ``(log-scale, angle / pi, tx, ty)``, zero-initialised (with
    ``pose_hidden=H > 0``, after a hidden layer of width H with LeakyReLU, so that a position the text
    code holds only non-linearly can be read; with ``pose_text=D > 0`` it also reads the sentence
    embedding ``[B, D]`` itself, passed to ``forward`` as ``text``): every object starts at ``scale0``
    of the image, upright, in the centre. With ``spin=True`` the object is also turned by the angle of
    the first two inputs (z's first two dimensions: uniform on the circle for Gaussian z), so that every
    rotation is drawn without G having to learn to vary it (for data whose objects appear at every
    rotation, as in Shapes). With ``taper=True`` the mask falls to 0 over the canvas's outer 3 pixels,
    so that the canvas's edge (a square frame around the object) cannot show in the image; with
    ``round_frame=True`` it falls to 0 over 3 pixels inside the frame's inscribed circle instead, so
    that the frame has no corners for a pointed object's tips to run into (a square frame's four corners
    are the farthest points it has). With ``normalize=True`` the canvas mask's centre and RMS radius are
    taken out before placing it (:meth:`transform`): the pose alone says where the object goes and how
    large it is, so the canvas cannot draw a small object small (or off-centre) and has only the outline
    left to draw. With ``templates=K > 0`` the canvas's mask is not drawn by its path but chosen: ``K``
    learned mask templates (logits at 16 x 16, bounded to (-6, 6), each starting as a lumpy disc of its
    own) are mixed by a softmax over ``K`` predicted from ``cat(z, c)`` (object prototypes, as in
    DTI-Sprites, Monnier et al., NeurIPS 2021): an outline is then a parameter learned from every image
    that shows it, and the sentence only has to pick it; the canvas path still draws the colour. With
    ``radial=K > 0`` the mask is the inside of a star-convex outline whose radius over angle is ``0.6 *
    exp(sum_k a_k cos k theta + b_k sin k theta)``, the ``2K`` coefficients a linear function of
    ``cat(z, c)`` (zero at the start: a disc): three corners, four or five are then equally easy to
    draw, where the conv canvas's square grid makes four the easiest. With ``anchors=A > 1`` the layer
    is placed at every point of an ``A x A`` grid (cell centres, plus the pose's translation) and the
    placements are mixed by a softmax that the pose head predicts: a translation alone learns only from
    the object's edges, so an object started on the wrong side gets little signal to cross the image; an
    anchor's weight is moved by the whole image (D pushes the mixture toward one anchor: a faint object
    at each point is no real image). With ``anchor_sample=True`` each image shows the layer at one
    anchor only, drawn from the softmax in training (the likeliest one in eval), and the softmax gets
    the mixture's gradient (straight-through): no faint copies for D to punish, and every anchor stays
    tried while its weight is above 0. With ``pattern=J > 0`` the object's colour is darkened where a
    periodic map is high: ``p = sigmoid(sum_j A_j cos(f_j . uv + phi_j) + b)`` over the object's own
    turned frame ``uv`` in image units (so a period is the same number of pixels at every size), ``J``
    learned wave vectors ``f_j`` and phases, the amplitudes ``A_j``, the bias ``b`` and the shade (how
    dark a fully patterned pixel is, a fraction of the colour) linear in ``cat(z, c)``; the amplitudes
    start at 0 and ``b`` at -3 (nearly solid). One wave thresholded draws stripes, two crossing waves
    draw a lattice of dots: texture as a parameter of a few numbers, where the canvas path must learn
    to draw it pixel by pixel. With ``sides=D > 0`` a side head reads the sentence embedding ``[B, D]``
    (``text``; not the noise: the side is the sentence's) and predicts a side logit (one linear layer,
    zero at the start, its output times ``SIDE_GAIN``), and the translation drawn is ``(s d(t_x), t_y)``
    with ``s = +1`` where the logit is >= 0 and ``-1`` elsewhere and ``d(t) = softplus(10 t) / 10`` a
    distance (never negative: the translation cannot cross the middle column by itself and undo the
    chosen side): left or right of the middle is a choice, learned by classification
    (``stage1.pose_pick_weight``: the frozen matcher's pick between the drawn placement and its mirror
    image), and only the distance from the middle by the image's gradient. The row stays a signed
    translation, which the image's gradient teaches on its own (docs/training-recipe.md, seventeenth
    round: with a side logit for the row too, the distance from the middle row shrank to 0.1). With
    ``cells=A > 1`` (and ``cell_text=D``) the position is a choice of column and of row among ``A`` each:
    a head reads the sentence embedding ``[B, D]`` and predicts ``A`` column and ``A`` row logits (times
    ``SIDE_GAIN``, zero at the start); the object is drawn at the likeliest column's and row's point,
    ``spacing * (k - (A - 1) / 2)`` per axis (``spacing`` one learned number per axis, shared by every
    image), plus the pose head's translation; the logits are learned by classification from the frozen
    matcher's pick among the ``A`` columns (the row as drawn) and the ``A`` rows (the column as drawn).
    With ``sizes=K > 1`` (and ``cells``) the size is a choice among ``K`` the same way: ``K`` logits read
    from the sentence, the chosen size's log-scale (one learned number per size, ``SIZE_STEP0`` apart at
    the start) added to the pose head's, learned from the matcher's pick among the ``K`` sizes.
    With ``textures=K > 1`` (and ``cells`` and ``pattern``) the texture is a choice among ``K`` the same way:
    ``K`` logits read from the sentence, the chosen texture's learned state (the pattern's ``J`` amplitudes,
    its bias and the shade's logit, stored over ``TEXTURE_GAIN``) is the pattern, in place of the head that
    reads ``cat(z, c)`` (added to a head, C52, the head learned around the first state chosen and every
    other state then read worse: the choice locked in); learned from the matcher's pick among the ``K``
    textures; texture 0 starts plain, texture 1 as the first wave (stripes), texture ``k >= 2`` as the waves
    ``2k - 3`` and ``2k - 2`` crossing (dots), so that the words have different patterns to be taught toward,
    each word's own. (In every form tried, C52-C55, the choice locked into one patterned state: off in every
    preset.) With ``pattern_waves="P@A,..."`` the waves are given (a period of ``P`` px at 64 px at ``A``
    degrees in the object's frame), not learned. With ``pattern_text=D > 0`` (and ``pattern``, without
    ``textures``) the pattern head reads the sentence embedding ``[B, D]`` (``text``) beside ``cat(z, c)``
    (its weights on it zero at the start, stored over ``PATTERN_TEXT_GAIN``, so that Adam moves them as fast as
    the two layers that bring the sentence to ``c``): the pattern has a code of the sentence of its own, which a loss
    on the pattern alone (``stage1.swap_weight`` with ``stage1.swap_detach``) can shape without moving the
    text code that the outline reads.
    After each call, ``mask`` holds the placed mask ``[B, 1, S, S]``
    (with its graph), which the training step penalises by area (``stage1.mask_weight``).

    Example::

        layer = ForegroundLayer(228, ngf=16)
        img = layer(torch.randn(2, 228), torch.zeros(2, 3, 64, 64))  # [2, 3, 64, 64]
    """

    def __init__(self, in_dim: int, ngf: int, cond_dim: int = 0, scale0: float = 0.35, mask_bias: float = -1.0,
                 canvas: str = "conv", spin: bool = False, taper: bool = False, normalize: bool = False,
                 templates: int = 0, pose_hidden: int = 0, pose_text: int = 0, anchors: int = 0,
                 round_frame: bool = False, radial: int = 0, anchor_sample: bool = False, pattern: int = 0,
                 sides: int = 0, cells: int = 0, cell_text: int = 0, sizes: int = 0, pattern_pairs: bool = False,
                 textures: int = 0, pattern_waves: str = "", pattern_text: int = 0, pattern_inset: float = 0.0):
        super().__init__()
        if sides and anchors:
            raise ConfigError("the side logits choose the one placement's side; the anchor grid has A x A placements")
        if sides < 0:
            raise ConfigError(f"the side head reads a sentence embedding of D >= 0 dims (0: off), got {sides}")
        self.sides = sides
        if cells == 1 or cells < 0 or (cells and (sides or anchors or not cell_text)):
            raise ConfigError(f"the cells of the position's choice must be 0 (off) or at least 2 per axis, not with "
                              f"the side logit or the anchor grid, and read a sentence embedding; got {cells}")
        # cells = A > 1: A column and A row logits from the sentence embedding [B, cell_text] (over SIDE_GAIN);
        # the chosen cell's point is spacing * (k - (A - 1) / 2) per axis, spacing learned (x, y)
        self.cells = cells
        if cells:
            self.cell_head = nn.Linear(cell_text, 2 * cells)
            self.spacing = nn.Parameter(torch.full((2,), CELL_SPACING0))
        # sizes = K > 1 (with cells): K size logits from the sentence embedding (over SIDE_GAIN); the chosen
        # size's log-scale (learned, SIZE_STEP0 apart at the start) is added to the pose head's
        if sizes == 1 or sizes < 0 or (sizes and not cells):
            raise ConfigError(f"the sizes of the size's choice must be 0 (off) or at least 2, with the cells of the "
                              f"position's choice; got {sizes}")
        self.sizes = sizes
        if sizes:
            self.size_head = nn.Linear(cell_text, sizes)
            self.size_levels = nn.Parameter(torch.zeros(sizes))  # set by start_upright
        # textures = K > 1 (with cells and pattern): K texture logits from the sentence embedding (over SIDE_GAIN);
        # the chosen texture's learned state [J + 2] (amplitudes, bias, shade logit) is the pattern (not cat(z, c))
        if textures == 1 or textures < 0 or (textures and not (cells and pattern)):
            raise ConfigError(f"the textures of the texture's choice must be 0 (off) or at least 2, with the cells of "
                              f"the position's choice and the pattern's waves; got {textures}")
        self.textures = textures
        if textures:
            self.texture_head = nn.Linear(cell_text, textures)
            self.texture_states = nn.Parameter(torch.zeros(textures, pattern + 2))  # set by start_upright
        # sides = D > 0: a side logit (left / right) from the sentence embedding [B, D], stored over SIDE_GAIN
        self.side_head = nn.Linear(sides, 1) if sides else None
        if pattern < 0 or (pattern and anchors):
            raise ConfigError(f"the pattern's waves must be >= 0 and not with the anchor grid, got {pattern}")
        if pattern_pairs and (pattern < 2 or pattern % 2):
            raise ConfigError(f"the pattern's waves in square pairs (model.g_layer_pattern_pairs) need an even number "
                              f">= 2 of them (model.g_layer_pattern), got {pattern}")
        if radial < 0 or (radial and templates):
            raise ConfigError(f"the radial outline's harmonics must be >= 0 and not with mask templates, got {radial}")
        if anchors == 1 or anchors < 0:
            raise ConfigError(f"the anchor grid must be 0 (off) or at least 2 per side, got {anchors}")
        if pose_hidden < 0:
            raise ConfigError(f"the pose head's hidden width must be >= 0, got {pose_hidden}")
        if templates < 0:
            raise ConfigError(f"the number of mask templates must be >= 0, got {templates}")
        self.normalize = normalize
        if canvas not in CANVASES:
            raise ConfigError(f"the foreground canvas must be one of {', '.join(CANVASES)}, got {canvas!r}")
        self.ngf, self.kind, self.spin = ngf, canvas, spin
        if round_frame:  # the mask falls to 0 over 3 pixels inside the frame's inscribed circle: no corners to fill
            u = torch.arange(CANVAS_SIZE, dtype=torch.float32) - (CANVAS_SIZE - 1) / 2
            r = (u[:, None] ** 2 + u[None, :] ** 2).sqrt()  # each pixel centre's distance from the frame's centre
            ramp = ((CANVAS_SIZE / 2 - 0.5 - r) / 3).clamp(0, 1)
            self.register_buffer("window", ramp[None, None], persistent=False)
        elif taper:  # the mask falls to 0 over the canvas's outer 3 pixels: its edge is never drawn
            i = torch.arange(CANVAS_SIZE)
            ramp = (torch.minimum(i, CANVAS_SIZE - 1 - i) / 3).clamp(max=1)  # [32]: 0, 1/3, 2/3, 1, ..., 1, ..., 0
            self.register_buffer("window", (ramp[:, None] * ramp[None, :])[None, None], persistent=False)
        else:
            self.window = None
        if canvas == "conv":
            self.fc = nn.Sequential(nn.Linear(in_dim, 4 * ngf * 4 * 4, bias=False), nn.BatchNorm1d(4 * ngf * 4 * 4),
                                    nn.ReLU(inplace=True))
            self.up = nn.ModuleList([UpBlock(4 * ngf, 2 * ngf, cond_dim), UpBlock(2 * ngf, ngf, cond_dim),
                                     UpBlock(ngf, ngf, cond_dim)])  # 8, 16, 32
            self.to_rgba = conv3x3(ngf, 4, bias=True)
            self.conditional = cond_dim > 0
        else:  # an implicit canvas: every pixel's colour and mask from its coordinates, modulated by cat(z, c)
            width = 2 * ngf
            self.register_buffer("features", fourier_features(CANVAS_SIZE), persistent=False)  # [1, F, 32, 32]
            self.inp = nn.Conv2d(self.features.shape[1], width, 1)
            self.hidden = nn.ModuleList([nn.Conv2d(width, width, 1) for _ in range(MLP_LAYERS - 1)])
            self.film = nn.ModuleList([CondAffine(in_dim, width) for _ in range(MLP_LAYERS)])
            self.to_rgba = nn.Conv2d(width, 4, 1)
        # the pose head: one linear layer, or (pose_hidden > 0) one hidden LeakyReLU layer and then that one
        # pose_text = D > 0: it also reads the sentence embedding [B, D] itself (passed to forward as text)
        self.pose_text = pose_text
        pose_dim = in_dim + pose_text
        self.pose_in = (nn.Sequential(nn.Linear(pose_dim, pose_hidden), nn.LeakyReLU(0.2)) if pose_hidden
                        else nn.Identity())
        # anchors = A > 1: the layer is placed at each point of an A x A grid (cell centres in [-1, 1],
        # plus the pose's translation) and the placements are mixed by a softmax over A^2 logits, which
        # the pose head predicts after its four numbers
        self.anchors, self.anchor_sample = anchors, anchor_sample
        if anchor_sample and not anchors:
            raise ConfigError("sampling one anchor (model.g_layer_anchor_sample) needs the anchor grid "
                              "(model.g_layer_anchors)")
        if anchors:  # the A x A cell centres (x, y), row by row from the top left: [A*A, 2]
            self.register_buffer("anchor_xy", fourier_features(anchors, octaves=0)[0].flatten(1).T.contiguous(),
                                 persistent=False)
        self.pose = nn.Linear(pose_hidden or pose_dim, 4 + anchors * anchors)
        if templates:  # K prototype masks: lumpy discs of radius 0.6 (logit 0 on the rim), each with its own noise
            radius = fourier_features(TEMPLATE_SIZE, octaves=0)[0].square().sum(0).sqrt()  # [16, 16]
            disc = 8.0 * (0.6 - radius)
            # lumpy: a disc's gradient, under random turns (spin), is the same at every angle and keeps it a disc
            lumps = F.interpolate(torch.randn(templates, 1, 4, 4), size=TEMPLATE_SIZE, mode="bicubic",
                                  align_corners=False)
            logits = disc + TEMPLATE_LUMPS * lumps + 0.5 * torch.randn(templates, 1, TEMPLATE_SIZE, TEMPLATE_SIZE)
            # stored as atanh(logit / LIMIT) * LIMIT / GAIN, the inverse of template_logits (before enlarging)
            bounded = logits.clamp(-0.99 * TEMPLATE_LIMIT, 0.99 * TEMPLATE_LIMIT) / TEMPLATE_LIMIT
            self.templates = nn.Parameter(torch.atanh(bounded) * (TEMPLATE_LIMIT / TEMPLATE_GAIN))
            self.select = nn.Linear(in_dim, templates)
        else:
            self.templates = None
        # radial = K > 0: the mask is the inside of an outline whose radius over angle is RADIAL_R0 times
        # exp(a Fourier series of K harmonics) predicted from cat(z, c); zero-initialised: a disc
        self.radial = radial
        if radial:
            u, v = fourier_features(CANVAS_SIZE, octaves=0)[0]  # each canvas pixel's (u, v) in [-1, 1]
            self.register_buffer("polar_rho", (u * u + v * v).sqrt()[None], persistent=False)  # [1, 32, 32]
            self.register_buffer("polar_basis", harmonic_basis(torch.atan2(v, u)[None], radial)[0],
                                 persistent=False)  # [2K, 32, 32]
            self.outline = nn.Linear(in_dim, 2 * radial)
        if normalize:  # each canvas pixel's (u, v), for the mask's moments
            self.register_buffer("coords", fourier_features(CANVAS_SIZE, octaves=0)[0], persistent=False)  # [2, 32, 32]
        # pattern = J > 0: the colour darkened where sigmoid(sum_j A_j cos(f_j . uv + phi_j) + b) is high;
        # f_j (stored over PATTERN_FREQ) and phi_j learned, A_j, b and the shade's logit linear in cat(z, c)
        # pattern_pairs: J / 2 learned vectors, each with its copy turned by 90 degrees (the same period): every
        # pair draws stripes (one amplitude) or a square lattice of dots (both), whatever the vectors learn
        self.pattern, self.pattern_pairs = pattern, pattern_pairs
        if pattern:
            learned = pattern // 2 if pattern_pairs else pattern
            turn = 2 * math.pi * torch.rand(learned)
            length = 0.6 + 0.8 * torch.rand(learned)  # periods of about 3 to 10 px at 64 px
            # drawn either way, so that the random numbers after them are the same with given waves
            waves = torch.stack([torch.cos(turn), torch.sin(turn)], dim=1) * length[:, None]
            if pattern_waves:  # given, not learned: (period in px at 64 px, angle in degrees) per wave
                given = parse_pattern_waves(pattern_waves, pattern)
                if pattern_pairs:
                    raise ConfigError("given waves (model.g_layer_pattern_waves) are not learned in pairs "
                                      "(model.g_layer_pattern_pairs)")
                turn = torch.tensor([math.radians(a) for _, a in given])
                length = torch.tensor([2 * math.pi * 32 / (period * PATTERN_FREQ) for period, _ in given])
                self.register_buffer("waves", torch.stack([torch.cos(turn), torch.sin(turn)], dim=1) * length[:, None])
            else:
                self.waves = nn.Parameter(waves)
            self.phases = nn.Parameter(2 * math.pi * torch.rand(pattern))
            # A_1..A_J, b, the shade's logit; with textures the chosen texture's state is the pattern (no head);
            # pattern_text = D > 0: the head also reads the sentence embedding [B, D] (a code of its own)
            self.pattern_head = None if textures else nn.Linear(in_dim + pattern_text, pattern + 2)
        if pattern_text < 0 or (pattern_text and (not pattern or textures)):
            raise ConfigError(f"the pattern head's sentence input (model.g_layer_pattern_text) needs the pattern's "
                              f"waves (model.g_layer_pattern) and no texture choice (model.g_layer_textures); "
                              f"got {pattern_text} dims")
        self.pattern_text = pattern_text
        # pattern_inset = r > 0 (px at 64 px): the pattern darkens only where the placed mask, eroded by r px, is
        # high, so that the object's rim keeps its plain colour and its outline is the same whatever the texture
        if pattern_inset < 0 or (pattern_inset and not pattern):
            raise ConfigError(f"the pattern's inset (model.g_layer_pattern_inset) is a margin in pixels >= 0 that "
                              f"needs the pattern's waves (model.g_layer_pattern); got {pattern_inset}")
        self.pattern_inset = float(pattern_inset)
        self.log_scale0, self.mask_bias = math.log(scale0), mask_bias
        self.start_upright()

    @torch.no_grad()
    def start_upright(self) -> None:
        """Every object upright, centred, at ``scale0``; faint over the background (mask bias).
        (Called again by a generator whose weight initialisation runs over this layer too.)"""
        nn.init.zeros_(self.pose.weight)
        nn.init.zeros_(self.pose.bias)
        for head in (getattr(self, "side_head", None), getattr(self, "cell_head", None),
                     getattr(self, "size_head", None), getattr(self, "texture_head", None)):  # none preferred
            if head is not None:
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)
        if getattr(self, "cells", 0):  # ... but the middle column and row by a hair: every object starts centred
            self.cell_head.bias[(self.cells - 1) // 2 :: self.cells] = 0.01
            self.spacing.fill_(CELL_SPACING0)
        if getattr(self, "sizes", 0):  # ... and the middle size
            self.size_head.bias[(self.sizes - 1) // 2] = 0.01
            self.size_levels.copy_(SIZE_STEP0 * (torch.arange(self.sizes) - (self.sizes - 1) / 2))
        if getattr(self, "radial", 0):  # the outline starts as a disc of radius RADIAL_R0
            nn.init.zeros_(self.outline.weight)
            nn.init.zeros_(self.outline.bias)
        if getattr(self, "pattern_head", None) is not None:  # no waves, the bias at PATTERN_BIAS, the shade half
            nn.init.zeros_(self.pattern_head.weight)
            nn.init.zeros_(self.pattern_head.bias)
            self.pattern_head.bias[self.pattern] = PATTERN_BIAS
        if getattr(self, "textures", 0):  # the first texture by a hair; texture 0 is the head's start (nearly solid),
            # texture 1 is the first wave at amplitude TEXTURE_AMP and half duty (stripes), texture k >= 2 the waves
            # 2k - 3 and 2k - 2 crossing, thresholded where both peak (dots): plain, stripes, dots, ...
            self.texture_head.bias[0] = 0.01
            states = torch.zeros_like(self.texture_states)
            states[0, self.pattern] = PATTERN_BIAS
            for k in range(1, self.textures):
                first = 0 if k == 1 else min(2 * k - 3, self.pattern - 1)
                states[k, first:min(first + (1 if k == 1 else 2), self.pattern)] = TEXTURE_AMP
                states[k, self.pattern] = 0.0 if k == 1 else -TEXTURE_AMP
            self.texture_states.copy_(states / TEXTURE_GAIN)  # stored over TEXTURE_GAIN
        nn.init.constant_(self.to_rgba.bias[3:], self.mask_bias)
        for film in getattr(self, "film", ()):
            film.start_as_identity()

    def canvas(self, zc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The object in its own frame: RGB in [-1, 1] ``[B, 3, 32, 32]`` and mask in (0, 1) ``[B, 1, 32, 32]``."""
        if self.kind == "conv":
            h = self.fc(zc).view(-1, 4 * self.ngf, 4, 4)
            for block in self.up:
                h = block(h, zc) if self.conditional else block(h)
        else:  # a per-pixel MLP as 1x1 convs; FiLM (scale and shift from cat(z, c)) after each layer
            h = self.inp(self.features.to(zc.dtype)).expand(len(zc), -1, -1, -1)  # [B, W, 32, 32]
            for i, film in enumerate(self.film):
                if i:
                    h = self.hidden[i - 1](h)
                h = F.relu(film(h, zc))
        rgba = self.to_rgba(h)
        if self.radial:  # inside the predicted outline, the edge about one canvas pixel wide
            self.coef = self.outline(zc).float()  # [B, 2K], with its graph: stage1.outline_weight reads it
            radius = outline_radius(self.coef, self.polar_basis[None])  # [B, 32, 32]
            mask = torch.sigmoid((radius - self.polar_rho) * (CANVAS_SIZE / 2))[:, None].to(rgba.dtype)
        elif self.templates is None:
            mask = torch.sigmoid(rgba[:, 3:])
        else:  # a softmax mixture of the prototype masks' logits
            weights = torch.softmax(self.select(zc).float(), dim=1)  # [B, K]
            mask = torch.sigmoid(torch.einsum("bk,kchw->bchw", weights, self.template_logits().float())).to(rgba.dtype)
        return torch.tanh(rgba[:, :3]), mask if self.window is None else mask * self.window.to(mask.dtype)

    def outline_cost(self, symmetric: bool = False, orders: torch.Tensor | None = None,
                     target: torch.Tensor | None = None, turned: bool = False) -> torch.Tensor:
        """The last drawn radial outlines' harmonics, summed amplitudes ``sum_k sqrt(a_k^2 + b_k^2)`` averaged over the
        batch (a scalar, with its graph): a group-lasso prior (``stage1.outline_weight``) under which a harmonic that
        the discriminator does not ask for costs more than it gains, so it falls to 0. The amplitude does not change
        when the outline turns, so the prior prefers no angle.

        ``symmetric`` (``stage1.outline_symmetric``): each outline's strongest harmonic ``m >= 2`` and its multiples
        cost nothing (a triangle keeps h3, h6, h9, the corners' own harmonics; a square h4, h8; a star h5, h10), the
        lumps off that symmetry still do; an outline whose strongest harmonic is under ``SYMMETRY_MIN`` counts as a
        circle and pays for all of them. Which harmonic leads is read without a gradient.

        ``orders`` ``[B]`` (``stage1.outline_shape``): the symmetry order of each image's shape word (square 4;
        0: a circle); that harmonic alone costs nothing, its multiples (the corners) and the rest still do.

        ``target`` ``[B, K]`` (``stage1.outline_target``): each image's shape word's own amplitudes (the data's
        outline); the cost is then ``sum_k |amp_k - target_k|``, so a harmonic pays for falling short of the data's
        as for growing past it (``orders`` is then not read).

        ``turned`` (``stage1.outline_phase``; ``target`` the data's outlines turned to phase 0,
        ``data.shapes.outline_turned``, and ``orders`` each image's symmetry order ``n``): harmonic ``k = j n`` is
        pulled toward ``target_k u^j`` as a complex coefficient, ``u`` the unit phase of the outline's own
        fundamental (read without a gradient), so that the corners' harmonics sit in phase with it, as a polygon's
        do; the cost is ``sum_k |c_k - target_k u^(k/n)|`` (the fundamental's term is ``||c_n| - target_n|``, the
        harmonics off the symmetry pay their amplitude)."""
        coef = self.coef.view(len(self.coef), 2, self.radial)  # [B, (cos, sin), K]
        amp = (coef.square().sum(1) + 1e-8).sqrt()  # [B, K]
        k = torch.arange(1, self.radial + 1, device=amp.device)  # harmonic numbers
        if target is not None and turned:
            c = torch.complex(coef[:, 0].float(), -coef[:, 1].float())  # a_k - i b_k  [B, K]
            n = orders.to(c.device).long()  # [B]; 0: a circle, whose target is all zeros
            with torch.no_grad():
                lead = c.gather(1, (n - 1).clamp(0, self.radial - 1)[:, None])  # [B, 1]: the fundamental
                u = lead / lead.abs().clamp_min(1e-12)
                j = torch.where(n[:, None] > 0, k[None] // n.clamp_min(1)[:, None], 0)  # [B, K]
                aim = torch.where(j > 0, target.to(c.device).float() * u ** j.clamp_min(1), 0)  # 0 off the multiples
            return ((c - aim).abs().square() + 1e-8).sqrt().sum(1).mean()
        if target is not None:
            return (amp - target.to(amp)).abs().sum(1).mean()
        if symmetric and self.radial >= 2:
            with torch.no_grad():
                lead_amp, lead = amp[:, 1:].max(1)  # [B]
                m = lead + 2  # harmonic number of the strongest among k >= 2
                keep = (k[None] % m[:, None] == 0) & (lead_amp >= SYMMETRY_MIN)[:, None]  # [B, K]
            amp = amp * (~keep).to(amp.dtype)
        if orders is not None:
            amp = amp * (k[None] != orders.to(amp.device)[:, None]).to(amp.dtype)  # order 0 matches no harmonic
        return amp.sum(1).mean()

    def reach(self) -> torch.Tensor:
        """The last drawn objects' circumradius ``[B]`` in image units (half the image's side): the placed scale times
        the radial outline's largest radius (over 180 angles), with their graphs. The Shapes data's size words are
        ranges of this number (``data.shapes.RADIUS_RANGE``)."""
        if not self.radial or self.normalize:
            raise ValueError("reach reads the radial outline (model.g_layer_radial) placed without "
                             "model.g_layer_normalize")
        angle = torch.arange(180, device=self.coef.device, dtype=torch.float32) * (2 * math.pi / 180)
        radius = outline_radius(self.coef, harmonic_basis(angle[None, :, None], self.radial))[..., 0]  # [B, A]
        return self.scale_drawn.float() * radius.amax(1)

    def size_cost(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """How far the last drawn objects' circumradius (:meth:`reach`) lies outside ``[low, high]`` (``[B]`` each, image
        units), in log units, batch mean: 0 inside the range (``stage1.size_weight``)."""
        r = self.reach().log()
        return (F.relu(low.to(r).log() - r) + F.relu(r - high.to(r).log())).mean()

    def sharp_mask(self, zc: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """The placed mask ``[B, 1, S, S]`` of a radial outline drawn at the image's own pixels: the outline's
        radius at each pixel's canvas angle (``grid [B, S, S, 2]``, ``affine_grid``'s canvas points), its logit
        rising ``SHARP_EDGE`` per image pixel across the edge (the canvas's rises 1 per canvas pixel: its edge is
        several image pixels wide at 256 px), times the canvas's window sampled there, the outline moved out so that
        it covers the soft mask's area. Where the canvas's mask enlarged is soft, this one is sharp."""
        g = grid.float()
        u, v = g[..., 0], g[..., 1]  # [B, S, S]
        basis = harmonic_basis(torch.atan2(v, u), self.radial)  # [B, 2K, S, S]
        radius = outline_radius(self.outline(zc).float(), basis)  # [B, S, S]
        pixel = (g[:, 0, 1] - g[:, 0, 0]).norm(dim=-1)[:, None, None]  # [B, 1, 1]: canvas units per image pixel
        # the canvas's soft edge (logistic, scale w = 2 / CANVAS_SIZE) adds pi^2 w^2 / 3 to r^2 in area: the sharp
        # outline is moved out by as much, so that it covers the area that Stage I learned to draw
        w = 2.0 / CANVAS_SIZE
        radius = (radius.square() + math.pi ** 2 * w * w / 3).sqrt()
        mask = torch.sigmoid((radius - (u * u + v * v).sqrt()) * (SHARP_EDGE / pixel))[:, None]  # [B, 1, S, S]
        if self.window is None:  # outside the canvas: nothing, as the enlarged canvas's zero padding
            return mask * ((u.abs() <= 1) & (v.abs() <= 1)).float()[:, None]
        window = self.window.float().expand(len(g), -1, -1, -1)
        return mask * F.grid_sample(window, g, mode="bilinear", padding_mode="zeros", align_corners=False)

    def pose_params(self, zc: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        """The pose head's output ``[B, 4]``: log-scale (over ``scale0``), angle / pi, tx, ty. With
        ``pose_text`` it also reads ``text``, the sentence embedding ``[B, pose_text]``."""
        if self.pose_text:
            zc = self._beside(zc, text, self.pose_text, "pose")
        return self.pose(self.pose_in(zc)).float()

    @staticmethod
    def _beside(zc: torch.Tensor, text: torch.Tensor | None, width: int, what: str, gain: float = 1.0) -> torch.Tensor:
        """``cat(z, c, gain * text)`` for a head that reads the sentence embedding ``text [B, width]`` beside
        ``cat(z, c)``; a clear error when ``text`` is missing or of another width."""
        if text is None or text.shape[-1] != width:
            raise ValueError(f"this {what} head reads a sentence embedding of {width} dims beside cat(z, c); "
                             f"got {None if text is None else tuple(text.shape)}")
        return torch.cat([zc, gain * text.to(zc.dtype)], dim=1)

    def _sentence_logits(self, head: nn.Linear | None, what: str, switch: str,
                         text: torch.Tensor | None) -> torch.Tensor:
        """A choice head's logits ``[B, out]`` (times ``SIDE_GAIN``) from the sentence embedding ``text``; clear
        errors when this layer has no such head (``model.<switch>``) or ``text`` has the wrong width."""
        if head is None:
            raise ValueError(f"this layer has no {what} logits (model.{switch})")
        if text is None or text.shape[-1] != head.in_features:
            raise ValueError(f"the {what} head reads a sentence embedding of {head.in_features} dims; "
                             f"got {None if text is None else tuple(text.shape)}")
        return SIDE_GAIN * head(text.to(head.weight.dtype)).float()

    def side_logits(self, text: torch.Tensor | None) -> torch.Tensor:
        """With ``sides``: the side logit ``[B, 1]`` (the object right of the middle where >= 0) from the
        sentence embedding ``text [B, sides]``."""
        return self._sentence_logits(self.side_head, "side", "g_layer_sides", text)

    def cell_logits(self, text: torch.Tensor | None) -> torch.Tensor:
        """With ``cells``: the column and row logits ``[B, 2, A]`` (left to right, top to bottom) from the
        sentence embedding ``text [B, cell_text]``."""
        head = self.cell_head if self.cells else None
        return self._sentence_logits(head, "cell", "g_layer_cells", text).view(-1, 2, self.cells)

    def size_logits(self, text: torch.Tensor | None) -> torch.Tensor:
        """With ``sizes``: the size logits ``[B, K]`` (smallest to largest) from the sentence embedding."""
        return self._sentence_logits(self.size_head if self.sizes else None, "size", "g_layer_sizes", text)

    def texture_logits(self, text: torch.Tensor | None) -> torch.Tensor:
        """With ``textures``: the texture logits ``[B, K]`` from the sentence embedding ``text [B, cell_text]``."""
        return self._sentence_logits(self.texture_head if self.textures else None, "texture", "g_layer_textures",
                                     text)

    def cell_points(self, cell: torch.Tensor) -> torch.Tensor:
        """With ``cells``: the points ``[B, 2]`` (x, y) of the cells ``cell [B, 2]`` (column, row indices)."""
        return self.spacing * (cell.to(self.spacing.dtype) - (self.cells - 1) / 2)

    def template_logits(self) -> torch.Tensor:
        """The mask templates' logits ``[K, 1, 32, 32]`` (``model.g_layer_templates``): the stored
        ``[K, 1, 16, 16]`` times the gain, bounded to (-6, 6), enlarged bilinearly to the canvas."""
        bounded = TEMPLATE_LIMIT * torch.tanh(self.templates * (TEMPLATE_GAIN / TEMPLATE_LIMIT))
        return F.interpolate(bounded, size=CANVAS_SIZE, mode="bilinear", align_corners=False)

    def moments(self, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The canvas mask's centre ``[B, 2]`` (x, y in the canvas's [-1, 1]) and its spread ``[B]``: the
        root-mean-square distance of the mask from that centre, over ``RMS_RADIUS``."""
        m = mask[:, 0].float()  # [B, 32, 32]
        total = m.sum((1, 2)) + 1e-4
        centre = (m[:, None] * self.coords).sum((2, 3)) / total[:, None]  # [B, 2]
        d2 = (self.coords[None] - centre[:, :, None, None]).square().sum(1)  # [B, 32, 32]
        radius = ((m * d2).sum((1, 2)) / total + 1e-4).sqrt()
        return centre, radius / RMS_RADIUS

    def anchor_weights(self, zc: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        """With ``anchors``: the softmax ``[B, A*A]`` that mixes the placements at the anchor grid's points
        (row by row from the top left, as ``anchor_xy`` lists them)."""
        if not self.anchors:
            raise ValueError("this layer has no anchor grid (model.g_layer_anchors)")
        return torch.softmax(self.pose_params(zc, text)[:, 4:], dim=1)

    def placement(self, zc: torch.Tensor, mask: torch.Tensor | None = None, text: torch.Tensor | None = None,
                  p: torch.Tensor | None = None, sides: torch.Tensor | None = None,
                  cell: torch.Tensor | None = None, size: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        """The object's ``(angle, scale, centre, tx, ty)`` (``[B]``, ``[B]``, ``[B, 2]``, ``[B]``, ``[B]``): its
        turn, its frame's scale (over the canvas mask's spread with ``normalize``), the canvas point placed
        at ``(tx, ty)`` (the mask's own centre with ``normalize``, else 0). ``p``: :meth:`pose_params`'s
        output and ``sides`` :meth:`side_logits`'s when the caller has them already; ``cell [B, 2]`` (with
        ``cells``) the column and row to draw at instead of the likeliest, ``size [B]`` (with ``sizes``) the
        size."""
        p = self.pose_params(zc, text) if p is None else p
        log_scale = p[:, 0] + self.log_scale0
        if self.sizes:  # the chosen size's log-scale (no gradient to the choice), plus the pose head's
            size = self.size_logits(text).argmax(-1) if size is None else size
            log_scale = log_scale + self.size_levels[size]
        scale = torch.exp(log_scale)
        angle = math.pi * p[:, 1]
        if self.spin:  # the angle of (z_0, z_1)
            angle = angle + torch.atan2(zc[:, 1].float(), zc[:, 0].float())
        centre = torch.zeros_like(p[:, 2:4])
        if mask is not None and self.normalize:
            centre, spread = self.moments(mask)
            scale = scale / spread
        tx, ty = p[:, 2], p[:, 3]
        if self.sides:  # the side of the middle column: the sign of the side logit (chosen, not moved by gradient);
            # the distance from the middle softplus(10 t) / 10 >= 0 (0.07 at t = 0, still learning), so that
            # the translation cannot cross the middle by itself and undo the chosen side
            sides = self.side_logits(text) if sides is None else sides
            signs = torch.where(sides >= 0, 1.0, -1.0)
            tx = F.softplus(SIDE_SHARPNESS * tx) / SIDE_SHARPNESS * signs[:, 0]
        if self.cells:  # the chosen cell's point (no gradient to the choice), plus the translation
            cell = self.cell_logits(text).argmax(-1) if cell is None else cell
            point = self.cell_points(cell)
            tx, ty = tx + point[:, 0], ty + point[:, 1]
        return angle, scale, centre, tx, ty

    def transform(self, zc: torch.Tensor, mask: torch.Tensor | None = None,
                  text: torch.Tensor | None = None, shift: torch.Tensor | None = None,
                  flip: torch.Tensor | None = None) -> torch.Tensor:
        """``affine_grid``'s matrices ``[B, 2, 3]``: from the image's coordinates to the canvas's.
        An object at ``t``, scaled by ``s`` and turned by ``a``: ``p_canvas = R(-a) (p - t) / s``. With
        ``normalize`` and the canvas ``mask``, the mask's own centre ``c`` and spread ``k`` (:meth:`moments`)
        are taken out: ``p_canvas = c + k R(-a) (p - t) / s``, so that wherever and however large the
        canvas draws its object, it lands at ``t`` with an RMS radius of ``s * RMS_RADIUS``. ``flip [B, 2]``
        multiplies ``t`` (signs: the object mirrored across the image's middle, :meth:`redraw`) and
        ``shift [B, 2]`` is then added to it (an anchor's point)."""
        return self._theta(self.placement(zc, mask, text), shift, flip)

    @staticmethod
    def _theta(placement: tuple[torch.Tensor, ...], shift: torch.Tensor | None = None,
               flip: torch.Tensor | None = None) -> torch.Tensor:
        angle, scale, centre, tx, ty = placement
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        if flip is not None:
            tx, ty = tx * flip[:, 0], ty * flip[:, 1]
        if shift is not None:
            tx, ty = tx + shift[:, 0], ty + shift[:, 1]
        row0 = torch.stack([cos, sin, centre[:, 0] - (cos * tx + sin * ty)], dim=1)
        row1 = torch.stack([-sin, cos, centre[:, 1] + sin * tx - cos * ty], dim=1)
        return torch.stack([row0, row1], dim=1)

    def pattern_map(self, zc: torch.Tensor, grid: torch.Tensor, scale: torch.Tensor, centre: torch.Tensor,
                    texture: torch.Tensor | None = None, text: torch.Tensor | None = None,
                    own: "StagePattern | None" = None) -> tuple[torch.Tensor, torch.Tensor]:
        """With ``pattern``: the map ``p [B, 1, S, S]`` in (0, 1) where the colour is darkened, and the
        shade ``[B, 1, 1, 1]`` (a fully patterned pixel's colour over the object's). ``grid [B, S, S, 2]``
        is ``affine_grid``'s (each image pixel's canvas point), ``scale`` and ``centre`` :meth:`placement`'s:
        ``(grid - centre) * scale`` is each pixel in the object's turned frame, in image units. With
        ``textures``, ``texture [B]`` is the chosen texture, whose state replaces the head's output; with
        ``pattern_text`` the head also reads ``text``, the sentence embedding ``[B, pattern_text]``. ``own``
        (:class:`StagePattern`): that copy's head, waves and phases in place of this layer's."""
        if own is not None:  # Stage II's own copy (model.stage2_pattern): its head, waves and phases
            head = own.read(zc, text)  # [B, J + 2]
        elif self.textures:  # the chosen texture's state
            head = TEXTURE_GAIN * self.texture_states[texture].float()  # [B, J + 2]
        elif self.pattern_text:
            head = self.pattern_head(self._beside(zc, text, self.pattern_text, "pattern", PATTERN_TEXT_GAIN)).float()
        else:
            head = self.pattern_head(zc).float()  # [B, J + 2]
        uv = (grid.float() - centre[:, None, None, :]) * scale[:, None, None, None]  # [B, S, S, 2]
        waves, phases = (self.waves, self.phases) if own is None else (own.waves, own.phases)
        if self.pattern_pairs:  # each vector and its copy turned by 90 degrees: (x, y) -> (-y, x)
            waves = torch.cat([waves, torch.stack([-waves[:, 1], waves[:, 0]], dim=1)])
        phase = torch.einsum("bhwc,jc->bjhw", uv, PATTERN_FREQ * waves) + phases[None, :, None, None]
        logit = (head[:, :self.pattern, None, None] * torch.cos(phase)).sum(1, keepdim=True)
        p = torch.sigmoid(logit + head[:, self.pattern, None, None, None])
        return p, torch.sigmoid(head[:, -1])[:, None, None, None]

    def inner_mask(self, m: torch.Tensor) -> torch.Tensor:
        """The placed mask ``m [B, 1, S, S]`` eroded by ``pattern_inset`` pixels (at 64 px, scaled to ``S``):
        each pixel's minimum over the square around it, without a gradient (the margin does not move the
        outline). Where the pattern may darken the object."""
        r = max(1, round(self.pattern_inset * m.shape[-1] / 64))
        with torch.no_grad():
            return -F.max_pool2d(-m, 2 * r + 1, stride=1, padding=r)

    def forward(self, zc: torch.Tensor, background: torch.Tensor, text: torch.Tensor | None = None,
                own_pattern: "StagePattern | None" = None, sharp: bool = False) -> torch.Tensor:
        """The object drawn from ``cat(z, c)`` and placed over ``background``; ``own_pattern``: its pattern drawn
        by that copy (:class:`StagePattern`, Stage II's) instead of this layer's; ``sharp``: the radial outline
        drawn at the image's pixels (:meth:`sharp_mask`) instead of the canvas's mask enlarged."""
        rgb, mask = self.canvas(zc)
        rgba = torch.cat([rgb, mask], dim=1)
        (image, self.mask, self.offset, self.choice_drawn, self.size_drawn,
         self.texture_drawn) = self._place(zc, rgba, mask, background, text, own_pattern=own_pattern, sharp=sharp)
        # choice_drawn: the side logit [B, 1] or the cell logits [B, 2, A], with their graph (None without);
        # size_drawn / texture_drawn: the size / texture logits [B, K] (with sizes / textures; else None)
        self.drawn = tuple(None if t is None else t.detach() for t in (zc, rgba, mask, background, text))  # redraw
        self.zc_drawn = zc  # with its graph: redraw_pattern's pattern reads it
        return image

    @torch.no_grad()
    def redraw(self, flip: torch.Tensor) -> torch.Tensor:
        """The last call's first ``N`` images ``[N, 3, S, S]`` again, each object's translation multiplied by
        ``flip [N, 2]`` (signs): mirrored across the middle column with ``(-1, 1)``, the middle row with
        ``(1, -1)``; its outline, colour, size and turn unchanged. No gradient (``stage1.pose_pick_weight``
        compares the placements with a frozen reader)."""
        if self.anchors:
            raise ValueError("redraw moves the one placement; with the anchor grid (model.g_layer_anchors) "
                             "there are A x A")
        drawn = [None if t is None else t[:len(flip)] for t in self.drawn]
        return self._place(*drawn, flip=flip.to(self.drawn[0].dtype))[0]

    @torch.no_grad()
    def redraw_at(self, cell: torch.Tensor, size: torch.Tensor | None = None,
                  texture: torch.Tensor | None = None, repeat: int = 1) -> torch.Tensor:
        """With ``cells``: the last call's first ``N`` images ``[N, 3, S, S]`` again, each object drawn at the
        column and row ``cell [N, 2]`` instead of the chosen ones (and with ``sizes``, at the size ``size [N]``
        when given; with ``textures``, in the texture ``texture [N]`` when given; the pose head's translation,
        outline, colour and turn unchanged). No gradient. ``repeat = R``: ``cell`` (and ``size``, ``texture``)
        hold ``R`` choices for each of the first ``N = len(cell) / R`` objects, choice by choice (rows
        ``k N + i``): every choice drawn in one call."""
        if not self.cells:
            raise ValueError("redraw_at moves the object to another cell; this layer has none (model.g_layer_cells)")
        if len(cell) % repeat:
            raise ValueError(f"redraw_at: {len(cell)} cells are not {repeat} choices for each object")
        n = len(cell) // repeat
        drawn = [None if t is None else t[:n].repeat(repeat, *[1] * (t.dim() - 1)) for t in self.drawn]
        return self._place(*drawn, cell=cell, size=size, texture=texture)[0]

    def redraw_pattern(self, n: int, texture: torch.Tensor | None = None, detach: bool = False) -> torch.Tensor:
        """With ``pattern``: the last call's first ``n`` images ``[n, 3, S, S]`` again, where only the pattern
        keeps a gradient: placement, outline, colour and background as drawn (no gradient), the pattern read
        from the last call's ``cat(z, c)`` with its graph, or with ``textures`` the state of texture
        ``texture [n]`` (the chosen one when ``None``); ``detach``: ``cat(z, c)`` without its graph (only the
        pattern's own parameters learn). ``stage1.swap_weight`` teaches the pattern alone."""
        if not self.pattern or self.anchors:
            raise ValueError("redraw_pattern redraws the object's pattern (model.g_layer_pattern, without "
                             "model.g_layer_anchors)")
        drawn = [None if t is None else t[:n] for t in self.drawn]
        zc = self.drawn[0][:n] if detach else self.zc_drawn[:n]
        return self._place(*drawn, texture=texture, pattern_zc=zc)[0]

    def _place(self, zc: torch.Tensor, rgba: torch.Tensor, mask: torch.Tensor, background: torch.Tensor,
               text: torch.Tensor | None, flip: torch.Tensor | None = None,
               cell: torch.Tensor | None = None, size: torch.Tensor | None = None,
               texture: torch.Tensor | None = None, pattern_zc: torch.Tensor | None = None,
               own_pattern: "StagePattern | None" = None, sharp: bool = False) -> tuple[torch.Tensor, ...]:
        """The canvas ``rgba [B, 4, 32, 32]`` placed over ``background``: ``(image [B, 3, S, S], placed mask
        [B, 1, S, S], translation [B, 2], the side logit [B, 1] or the cell logits [B, 2, A] or None, the size
        logits [B, K] or None, the texture logits [B, K] or None)`` (with the anchor grid, the translation
        before an anchor's point). ``pattern_zc``: everything but the pattern without a gradient, the pattern
        read from it (:meth:`redraw_pattern`). ``sharp``: the mask drawn from the radial outline at the image's
        pixels (:meth:`sharp_mask`)."""
        if sharp and (self.anchors or not self.radial):
            raise ValueError("sharp draws the radial outline at the image's pixels: this layer needs a radial "
                             "outline (model.g_layer_radial) and no anchor grid")
        if not self.anchors:
            with torch.no_grad() if pattern_zc is not None else contextlib.nullcontext():
                pose = self.pose_params(zc, text)
                sides = self.side_logits(text) if self.sides else None
                choice = self.cell_logits(text) if self.cells else sides
                size_logits = self.size_logits(text) if self.sizes else None
                texture_logits = self.texture_logits(text) if self.textures else None
                if self.textures and texture is None:
                    texture = texture_logits.argmax(-1)
                placement = self.placement(zc, mask, text, pose, sides,
                                           choice.argmax(-1) if self.cells and cell is None else cell,
                                           size_logits.argmax(-1) if self.sizes and size is None else size)
                offset = torch.stack(placement[3:], dim=1)  # [B, 2]: (tx, ty), drawn (with the sides' signs)
                self.scale_drawn = placement[1]  # [B], with its graph: stage1.size_weight reads it
                grid = F.affine_grid(self._theta(placement, flip=flip).to(rgba.dtype), list(background.shape),
                                     align_corners=False)
                placed = F.grid_sample(rgba, grid, mode="bilinear", padding_mode="zeros",
                                       align_corners=False)  # outside the canvas: mask 0
                fg, m = placed[:, :3], placed[:, 3:]
                if sharp:
                    m = self.sharp_mask(zc, grid).to(m.dtype)
            if self.pattern:  # the colour (in [0, 1]) times 1 - p (1 - shade)
                p, shade = self.pattern_map(zc if pattern_zc is None else pattern_zc, grid, placement[1],
                                            placement[2], texture, text, own_pattern)
                if self.pattern_inset:
                    p = p * self.inner_mask(m).to(p.dtype)
                fg = (fg + 1) * (1 - p * (1 - shade)).to(fg.dtype) - 1
            return m * fg + (1.0 - m) * background, m, offset, choice, size_logits, texture_logits
        pose = self.pose_params(zc, text)
        # the layer at every anchor, mixed: each anchor's weight gets a gradient from the whole image
        b, k = len(zc), len(self.anchor_xy)
        rep = lambda x: None if x is None else x.repeat_interleave(k, dim=0)  # noqa: E731
        theta = self.transform(rep(zc), rep(mask), rep(text), shift=self.anchor_xy.repeat(b, 1))
        grid = F.affine_grid(theta.to(rgba.dtype), [b * k, 4, *background.shape[2:]], align_corners=False)
        placed = F.grid_sample(rep(rgba), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        placed = placed.view(b, k, 4, *background.shape[2:])
        w = torch.softmax(pose[:, 4:], dim=1)  # anchor_weights
        if self.anchor_sample:  # one anchor per image (drawn in training, the likeliest in eval), straight-through
            pick = torch.multinomial(w.detach(), 1)[:, 0] if self.training else w.argmax(dim=1)
            w = F.one_hot(pick, k).to(w.dtype) + w - w.detach()
        w = w.to(rgba.dtype)[:, :, None, None, None]  # [B, K, 1, 1, 1]
        m = (w * placed[:, :, 3:]).sum(1)  # [B, 1, S, S]: at most 1 (the weights sum to 1)
        return (w * placed[:, :, 3:] * placed[:, :, :3]).sum(1) + (1.0 - m) * background, m, pose[:, 2:4], None, None, None


class StagePattern(nn.Module):
    """Stage II's own copy of a layered Stage I's pattern (``model.stage2_pattern``): the pattern head, its
    waves and phases, trainable while Stage I stays frozen, so that Stage II can redraw the object's texture
    at 256 px without moving its outline, colour or place. The head reads ``cat(z, c)`` (Stage I's text code, as
    Stage I's head does) and the sentence embedding itself (``text_dim`` dims, its weights stored over
    ``PATTERN_TEXT_GAIN`` and zero at the start). :meth:`copy_from` starts it as Stage I's pattern, so that an
    untrained copy draws exactly what Stage I draws."""

    def __init__(self, layer: ForegroundLayer, text_dim: int):
        super().__init__()
        if not layer.pattern or layer.pattern_head is None:
            raise ConfigError("Stage II's own pattern (model.stage2_pattern) copies the layered Stage I's pattern "
                              "head: it needs model.g_layer_pattern and no texture choice (model.g_layer_textures)")
        self.pattern, self.text_dim = layer.pattern, text_dim
        self.zc_dim = layer.pattern_head.in_features - layer.pattern_text  # cat(z, c)
        self.head = nn.Linear(self.zc_dim + text_dim, layer.pattern + 2)
        self.waves = (nn.Parameter(layer.waves.detach().clone()) if isinstance(layer.waves, nn.Parameter)
                      else nn.Buffer(layer.waves.detach().clone()))  # given waves stay given
        self.phases = nn.Parameter(layer.phases.detach().clone())
        self.copy_from(layer)

    @torch.no_grad()
    def copy_from(self, layer: ForegroundLayer) -> None:
        """Start as ``layer``'s pattern (after its trained weights are loaded): its head on ``cat(z, c)`` (and on
        the sentence, where it reads one of this width), its waves and phases; the rest of the head zero."""
        head = layer.pattern_head
        self.head.weight.zero_()
        self.head.weight[:, :self.zc_dim] = head.weight[:, :self.zc_dim]
        if layer.pattern_text == self.text_dim:  # the same sentence input, the same gain
            self.head.weight[:, self.zc_dim:] = head.weight[:, self.zc_dim:]
        self.head.bias.copy_(head.bias)
        self.waves.copy_(layer.waves)
        self.phases.copy_(layer.phases)

    def read(self, zc: torch.Tensor, text: torch.Tensor | None) -> torch.Tensor:
        """The pattern's amplitudes, bias and shade logit ``[B, J + 2]`` from ``cat(z, c) [B, zc]`` and the
        sentence embedding ``text [B, text_dim]``."""
        joint = ForegroundLayer._beside(zc, text, self.text_dim, "Stage II's pattern", PATTERN_TEXT_GAIN)
        return self.head(joint).float()  # [B, J + 2]
