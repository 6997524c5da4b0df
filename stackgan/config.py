"""Configuration: frozen dataclasses, named presets, YAML files and ``key=value`` overrides.

Example::

    cfg = get_preset("fast")
    cfg = apply_overrides(cfg, ["stage1.batch_size=32", "model.ngf1=24"])
    print(to_yaml(cfg))
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True)
class ModelConfig:
    text_dim: int = 384  # set from the text encoder at training time
    z_dim: int = 100
    cond_dim: int = 128
    ngf1: int = 128  # Stage-I generator width (birds: 128)
    ndf1: int = 64  # Stage-I discriminator width (birds: 64)
    ngf2: int = 128
    ndf2: int = 64
    res_blocks: int = 4
    ca_variant: str = "pt"  # pt: ReLU + log-variance; tf: LeakyReLU + log-sigma, truncated eps;
    #   none (not in the paper; DF-GAN): c = LeakyReLU(FC(text)), no noise, no KL term
    g1_variant: str = "pt"  # pt: up-blocks down to ngf/2 at 64x64; tf: bottlenecks at 4x4 and 8x8, no ngf/2 layer;
    #   dfgan (not in the paper): no BatchNorm, DF-GAN's residual blocks, each modulated by cat(z, c)
    d_text_path: str = "mu"  # mu: D reuses G's CA mean, detached (PT); fc: D's own FC (TF)
    d_head_kernel: int = 3  # PT 3, TF 1
    uncond_head2: bool = True  # PT Stage-II D has an extra image-only head
    uncond_head1: bool = False  # not in the paper (StackGAN++'s joint loss): Stage-I D also has an image-only head
    stage2_image_skip: bool = False  # not in the paper: Stage II refines the upsampled Stage-I image
    stage2_render: bool = False  # ... the layered Stage I's scene drawn again at 256 px instead (its pattern sharp)
    stage2_pattern: bool = False  # ... with stage2_render: the object's pattern drawn by Stage II's own copy of Stage
    #   I's pattern head and waves (trained; its head also reads the sentence, weights zero at the start)
    stage2_sharp: bool = False  # ... with stage2_render: the radial outline drawn from its curve at 256 px, its edge
    #   one pixel wide (not the 32 px canvas's mask enlarged); Stage I's weights, no new ones
    stage2_masked: bool = False  # ... Stage II changes only the pixels near the layered Stage I's object
    stage2_mask_grow: int = 2  # ... within this many pixels (at 64 px) of its mask (0: only on the object itself)
    d_spectral_norm: bool = False  # not in the paper: spectral normalization of D's convs and linears
    nef: int = 16  # width of the latent encoder of the reconstruction branch (stage1.recon_weight)
    # not in the paper (the geometry design, docs/training-recipe.md):
    g_fusion: bool = False  # cat(z, c) modulates every up-block of G (scale and shift after each BN)
    g_coords: bool = False  # Stage-I up-blocks also see x and y coordinate channels (CoordConv)
    g_layered: bool = False  # Stage I: its path draws the background; an object drawn in its own frame is placed
    #   over it by an affine transform predicted from cat(z, c) (LR-GAN; stackgan.models.layered)
    g_layer_canvas: str = "conv"  # how that object is drawn in its frame: conv (up-blocks) or mlp (a per-pixel MLP
    #   of the coordinates, modulated by cat(z, c))
    g_layer_background: str = "full"  # under that object: full (the usual path), smooth (a 4x4 image enlarged
    #   bilinearly, which cannot draw the object itself) or vertical (4 rows x 1 column: a colour that changes only
    #   from top to bottom, which cannot put a blob of the object's colour under it either) or ramp (a top and a
    #   bottom colour, linear in between: no horizontal band either)
    g_layer_spin: bool = False  # that object is also turned by the angle of z's first two dims (uniform): every
    #   rotation without G learning to vary it (data whose objects appear at every rotation)
    g_layer_taper: bool = False  # that object's mask falls to 0 over its canvas's outer 3 pixels (no canvas frame)
    g_layer_radial: int = 0  # > 0: that object's mask is the inside of an outline whose radius over angle is a
    #   Fourier series of this many harmonics predicted from cat(z, c) (a disc at the start), not drawn by its canvas
    g_layer_pattern: int = 0  # J > 0: that object's colour is darkened by a periodic map of J learned waves in its
    #   own turned frame, amplitudes from cat(z, c) (stripes and dots as a few numbers; none at the start)
    g_layer_pattern_text: bool = False  # that pattern's head also reads the sentence embedding itself (beside
    #   cat(z, c); zero weights at the start): a code of the sentence that only the pattern reads
    g_layer_pattern_inset: float = 0.0  # r > 0: that pattern darkens only where the object's mask eroded by r px (at
    #   64 px) is high: the rim keeps its plain colour, the outline is the same whatever the texture
    g_layer_pattern_pairs: bool = False  # those waves come in pairs at right angles of one period (J / 2 learned
    #   vectors, each also turned by 90 degrees): each pair draws stripes or a square lattice of dots
    g_layer_sides: bool = False  # that object's side of the middle column (left / right) is the sign of a logit
    #   read from the sentence embedding, learned from the matcher's pick (stage1.pose_pick_weight); the
    #   translation sets only the distance (the row stays a signed translation)
    g_layer_cells: int = 0  # A > 1: that object's column and row are each a choice among A (logits read from the
    #   sentence embedding, learned from the matcher's pick among the A columns and the A rows:
    #   stage1.pose_pick_weight); drawn at the chosen cell's point (spacing learned) plus the translation
    g_layer_sizes: int = 0  # K > 1, with g_layer_cells: that object's size is a choice among K too (logits read from
    #   the sentence embedding, learned from the matcher's pick among the K sizes); the chosen size's log-scale
    #   (learned) is added to the pose head's
    g_layer_pattern_waves: str = ""  # "P@A,...": those waves given, not learned: a period of P px at 64 px at A
    #   degrees in the object's frame, one per wave (a prior for data whose texture scale is known; a diagnostic)
    g_layer_textures: int = 0  # K > 1, with g_layer_cells and g_layer_pattern: that object's texture is a choice
    #   among K too (logits read from the sentence embedding, learned from the matcher's pick among the K textures);
    #   the chosen texture's learned pattern state (amplitudes, bias, shade) is the pattern (in place of the head reading cat(z, c))
    g_layer_round: bool = False  # that object's mask falls to 0 inside its frame's inscribed circle (not at the
    #   square frame's edge): no corners for a pointed object's tips to run into
    g_layer_normalize: bool = False  # that object is placed by its mask's own centre and RMS radius: only the pose
    #   sets its position and size, and the frame has only the outline to draw
    g_layer_templates: int = 0  # > 0: that object's mask is a softmax mixture, chosen from cat(z, c), of this
    #   many learned mask templates (object prototypes) instead of being drawn by its canvas path
    g_layer_pose_hidden: int = 0  # > 0: that object's pose head has a hidden layer of this width (LeakyReLU)
    #   before its linear output, so that it can read a position the text code holds non-linearly
    g_layer_pose_text: bool = False  # that object's pose head also reads the sentence embedding itself, not only
    #   cat(z, c) (a linear read-out of left / right reached 0.60 from R1's c and 0.875 from the embedding)
    g_layer_anchors: int = 0  # A > 1: that object is placed at each point of an A x A grid (plus the pose's
    #   translation), the placements mixed by a softmax the pose head predicts: every position gets a gradient
    g_layer_anchor_sample: bool = False  # with g_layer_anchors: each image shows the object at one anchor, drawn
    #   from that softmax in training (the likeliest in eval), the softmax learning straight-through
    g_layer_scale0: float = 0.35  # that object's starting scale: its frame's half-width over the image's, before
    #   the pose head learns (a frame too tight for the largest objects makes them fill it and take its corners)
    d_arch: str = "dcgan"  # dcgan: the paper's D; resnet: BN-free gated residual D, one-way head
    d_batchnorm: bool = True  # dcgan D: false removes its BatchNorm layers (pair with d_spectral_norm)
    d_blur: bool = False  # dcgan D: a fixed 3x3 binomial blur before each stride-2 conv (anti-aliased down-sampling)
    d_projection: bool = False  # dcgan D: its conditional head adds a projection term <W text, sum of 4x4 features>
    d_deep: bool = False  # Stage-I dcgan D: its encoder reads the image enlarged to 128 px through 3x3 convs with ReLU
    #   (widths ndf, 2, 4, 6, 8 ndf; a stride-1 stage at 8x8, averaged to 4x4), the attribute checker's layout
    #   with fresh weights: trained alone to name the shape, it learns in 3,000 steps what the usual encoder does not
    d_stem: bool = False  # Stage-I dcgan D: a stride-1 3x3 conv stage at 64 px before the down-blocks, whose first
    #   block then keeps ndf channels (the first stride-2 conv no longer sees raw pixels: thin outlines survive)
    info_codes: int = 0  # not in the paper (InfoGAN): the first N dims of z are codes that a head on the Stage-I D's
    #   4x4 code must read back from the generated image (weight stage1.info_weight), so that z changes the image
    d_mbstd: bool = False  # resnet D and the Stage-I dcgan D: a minibatch standard-deviation feature before the head
    d_contrast: int = 0  # not in the paper (XMC-GAN): width of a contrastive embedding head on D's 4x4 code and
    #   its text code (0: none); trained with stage<N>.contrast_weight
    d_contrast_fake: bool = False  # that head also has a learned "generated image" text: D trains G's images to pick
    #   it and real images not to, so that G cannot satisfy the head with images a real one would not match
    d_contrast_trunk: str = "d"  # what that head's image side reads: d, D's own 4x4 code; checker, an encoder of its
    #   own in the attribute checker's layout (widths ndf, 2, 4, 6, 8 ndf; D's spectral norm and BatchNorm settings)
    d_gate: float = 0.0  # resnet D: initial gate of each residual branch (DF-GAN: 0, the block starts as its shortcut)


@dataclass(frozen=True)
class StageConfig:
    batch_size: int = 64
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    kl_weight: float = 2.0
    lr_decay_epochs: float = 100.0  # halve both learning rates every this many epochs (0: never)
    max_steps: int = 0  # 0: no step limit (then `minutes` or `epochs` must stop it)
    epochs: float = 600.0  # the paper's schedule; max_steps / minutes stop earlier
    minutes: float = 0.0  # wall-clock budget for this stage (0: none)
    log_every: int = 50
    sample_every: int = 500
    checkpoint_every: int = 1000
    on_divergence: str = "stop"  # non-finite losses / weights: stop, or rollback to the last checkpoint at half the lr
    keep_checkpoints: int = 3  # RUN/stage<N>/checkpoints/ keeps this many of the newest (state.pt is the newest)
    # not in the paper (fast recipe switches; 0 = off):
    match_weight: float = 0.0  # G also minimizes an image-text matching loss (stackgan.matching)
    match_warmup: int = 0  # the matching loss's weight rises linearly from 0 to match_weight over this many steps
    match_foils: bool = False  # G's matching loss also counts D's wrong captions that are no caption of the batch
    #   (the one-word foils, with data.foil_share > 0) as wrong texts for each image, as the matcher learned them
    match_share: float = 1.0  # the matching loss reads this share of the batch (its first images; the others
    #   are its wrong texts still): the frozen matcher's forward and backward cost in proportion
    ema_decay: float = 0.0  # sample and save an exponential moving average of G's weights
    gan_loss: str = "bce"  # bce: the paper's (non-saturating G); hinge: SN-GAN / BigGAN hinge loss
    recon_weight: float = 0.0  # cVAE-GAN branch: L1 of G's redraw of the real image from its encoded z
    latent_kl_weight: float = 1.0  # KL of the encoded z to N(0, I) (with recon_weight > 0)
    d_translate: int = 0  # D sees real and fake images shifted by up to this many pixels (at 64 px; stackgan.augment)
    d_noise: float = 0.0  # D sees real and fake images with Gaussian noise of this standard deviation added
    gp_weight: float = 0.0  # matching-aware gradient penalty on (real image, its text): weight * mean(|grad|^power)
    gp_power: float = 6.0  # (DF-GAN: weight 2, power 6; power 2 with the image alone is R1)
    ms_weight: float = 0.0  # mode seeking (MSGAN, Mao et al. 2019): G also minimizes weight / (mean |G(z1, t) -
    #   G(z2, t)| / mean |z1 - z2|) over half the batch's captions, so that the noise changes the image
    gp_every: int = 1  # compute the penalty every N steps, weighted N times (lazy regularisation)
    info_weight: float = 1.0  # with model.info_codes > 0 (Stage I): weight of the squared error of D's read-back of
    #   the codes, in D's loss and in G's (InfoGAN's mutual-information term, Gaussian with unit variance)
    mask_weight: float = 0.0  # with model.g_layered (Stage I): G also minimizes weight * the mean of the placed
    #   object mask over the image (an area prior): mask where the layer only copies the background costs
    pose_pick_weight: float = 0.0  # with the layered G and the matcher (Stage I): each object is also placed at
    #   its translation's mirror images (x, y or both signs flipped), the frozen matcher picks the placement that
    #   best matches the caption, and G minimizes weight * the squared distance of its translation to the pick
    pose_pick_share: float = 1.0  # ... computed on this share of the batch (its first images): the matcher reads
    #   four placements of each (with model.g_layer_cells=A, 2A - 1)
    g_hold: int = 0  # G's weights are held for the first N steps of the run (only D learns; G's update is skipped):
    #   a fine-tune from --init-generator gives its new D time to learn the data before G follows it
    outline_weight: float = 0.0  # with model.g_layer_radial (Stage I): G also minimizes weight * the radial outline's
    #   summed harmonic amplitudes (sum_k sqrt(a_k^2 + b_k^2), batch mean; a group lasso): a harmonic D does not ask
    #   for (a lump too small to see at 64 px, sharp at 256 px) falls to 0
    outline_symmetric: bool = False  # that prior leaves each outline's strongest harmonic (k >= 2) and its multiples
    #   alone (a triangle's h3, h6, h9: its corners), so that a polygon's corners are not rounded off; the lumps off
    #   that symmetry still pay; an outline whose strongest harmonic is under 0.05 is a circle and pays for all
    outline_shape: bool = False  # that prior leaves the fundamental of each image's shape word alone (square h4,
    #   triangle h3, star h5; from the records' attributes: Shapes data), charging every other harmonic
    outline_target: bool = False  # that prior charges |amp_k - data_k| instead of amp_k: each harmonic is pulled to
    #   the data's amplitude for the image's shape word (Shapes records' attributes), from above and below
    outline_phase: bool = False  # with outline_target: the corners' harmonics (k = j n of an n-fold shape) are
    #   pulled toward the data's coefficient at the phase of the outline's own fundamental to the power j (a square's
    #   h8 in phase with its h4: corners, not lobes), not only toward its amplitude; the rotation stays free
    size_weight: float = 0.0  # with model.g_layer_radial (Stage I, Shapes data): G also minimizes weight * how far
    #   (in log units) each object's circumradius (placed scale times the outline's largest radius) lies outside the
    #   data's range for the image's size word (data.shapes.RADIUS_RANGE): at 64 px neither D nor the matcher tells
    #   a medium circle drawn between the data's medium and large ranges from either
    outline_start: int = 0  # that prior acts from this step on (0 before it, still logged): from the first step it
    #   locks the outline onto whichever harmonic leads early, before D has found each shape's symmetry
    mask_warmup: int = 0  # the area prior's weight rises linearly from 0 to mask_weight over this many steps (at
    #   full weight from the first step, the prior closes the mask before D asks for an object)
    contrast_weight: float = 0.0  # with model.d_contrast > 0: D learns to pick each real image's caption among the
    #   batch's captions through its contrastive head (InfoNCE), and G minimizes the same loss on its images
    contrast_temp: float = 0.1  # that loss's temperature (cosine similarity / temp)
    contrast_wrong: bool = False  # that loss's candidates also include D's wrong captions (with data.foil_share > 0,
    #   one-word foils: an image must then tell its caption from the same caption with one word changed)
    contrast_zoom: float = 1.0  # > 1: that head sees real and generated images zoomed about their centre by a random
    #   factor in [1 / zoom, zoom] (its own D pass), so that an object's area no longer tells its shape (1: off)
    consistency_weight: float = 0.0  # Stage II: G also minimizes weight * the L1 distance of its image, area-resized
    #   to 64 px, to its Stage-I image: what Stage II adds can only be detail finer than 64 px
    swap_weight: float = 0.0  # with data.swap_attribute=texture, the layered G's pattern and the matcher (Stage I):
    #   each object redrawn with only its pattern keeping a gradient, and the frozen matcher must pick its caption
    #   among the same caption with the texture word swapped for each texture (cross-entropy, weight); with
    #   model.g_layer_textures, texture state k redrawn for every object must pick the caption swapped to value k
    swap_share: float = 0.25  # ... computed on this share of the batch (its first images)
    image_pair_weight: float = 0.0  # with match_weight > 0: G also minimizes weight * the cross-entropy that makes
    #   each of its images (the matching loss's match_share of the batch) nearest, in the frozen matcher's image space,
    #   to the real image whose caption it was drawn from, among the batch's real images (XMC-GAN's image-image term)
    patch_weight: float = 0.0  # a texture critic (stackgan.models.patch): a small conditional D on a patch cut at the
    #   object's centre, real or generated, with the sentence (hinge; wrong pairs: with data.swap_attribute the caption
    #   with its texture word swapped), trained beside D; G also minimizes weight * minus its score of G's patches
    patch_size: int = 32  # ... the patch's side in pixels at the stage's resolution
    patch_r1: float = 0.0  # ... gamma of an R1 penalty on its real patches (gamma / 2 * |grad|^2; 0: none)
    swap_detach: bool = False  # ... with the pattern reading cat(z, c) detached: only the pattern's own parameters
    #   (head, waves) learn from it, not the text code that the outline and placement also read


@dataclass(frozen=True)
class DataConfig:
    text_encoder: str = "minilm"  # see stackgan.text.encoders.ENCODERS
    text_norm: str = "standardize"  # standardize: per-dimension z-score over train captions; none
    caption_mode: str = "one"  # one: a random caption per step (PT); mean4: mean of 4 (TF)
    wrong_pairs: str = "shift"  # shift: roll the batch by one (PT); random: other images; class: other images
    #   of another class, redrawn on a collision (TF; needs "label" in the manifest); hard: the
    #   batch's caption nearest to the right one (not in the paper; VSE++-style hard negatives)
    augment: str = "none"  # none; crop_flip: resize to 76/64, random crop, random flip (paper)
    # the image-text matcher (stackgan.matching), trained once when a stage has match_weight > 0
    matcher_steps: int = 1500
    matcher_batch: int = 64
    matcher_widths: tuple = (16, 32, 64, 128)  # one stride-2 conv stage each: 64 px -> 4 px
    matcher_size: int = 64  # the resolution it reads (images area-resized to it): 64, or 128 for a Stage II whose
    #   256 px images hold a pattern that 64 px cannot (the checker layout reads 128 px either way)
    matcher_trunk: str = "strided"  # strided: 4x4 stride-2 convs, LeakyReLU; checker: the attribute checker's
    #   layout (image enlarged to 128 px where smaller, 3x3 convs, ReLU, the last stage stride 1, pooled to 4x4)
    matcher_zoom: float = 1.0  # > 1: the matcher trains on images zoomed about their centre by a random factor in
    #   [1 / zoom, zoom], so that an object's area does not tell its shape word (1: off)
    matcher_stretch: float = 1.0  # > 1: ... and stretched along a random direction by a random factor in
    #   [1 / stretch, stretch] (squeezed across it: area kept), so that it must count an outline's corners (1: off)
    matcher_hard: float = 0.0  # weight of VSE++'s hardest-negative hinge, in training the matcher and in G's loss
    foil_share: float = 0.0  # share of D's wrong captions that are one-word foils (stackgan.data.foils)
    matcher_foils: bool = False  # the matcher also tells each image from one-word foils of its captions
    foils_per_image: int = 4  # foils made (and encoded, cached) per train image
    foil_attributes: str = ""  # Shapes captions: the attributes a foil may change, e.g. "shape" ("": all six,
    #   weighted toward shape and texture); precomputed vectors bring their own (stackgan data attributes)
    matcher_foil_attributes: str = ""  # ... the attributes the matcher's own foils change ("": foil_attributes'); D's
    #   foils keep foil_attributes. Sets joined by "+" give the matcher one foil of each set per image and step:
    #   "shape+texture", a shape foil and a texture foil ("shape,texture": one foil that changes either)
    swap_attribute: str = ""  # Shapes captions: each train caption also encoded (and cached) with this attribute's
    #   words swapped for each of its values ("texture": solid, striped, dotted), for stage<N>.swap_weight
    seed: int = 0


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    stage1: StageConfig = field(default_factory=StageConfig)
    stage2: StageConfig = field(default_factory=lambda: StageConfig(batch_size=16))
    data: DataConfig = field(default_factory=DataConfig)
    precision: str = "fp32"  # fp32 | bf16 (autocast) | fp16 (autocast + a gradient scaler per network); losses fp32
    channels_last: bool = True
    compile: bool = False  # torch.compile G and D (the first steps take longer while it compiles)
    # G's last N up-blocks (and its RGB conv) keep only their input through D's update and compute
    # their activations again in G's backward pass: less memory for one more forward of N blocks
    recompute_blocks: int = 0
    sync_batchnorm: bool = False  # multi-GPU: BatchNorm statistics over all processes' batches (CUDA only)
    deterministic: bool = False  # deterministic kernels only (torch.use_deterministic_algorithms); may be slower
    seed: int = 0

    def stage(self, n: int) -> StageConfig:
        return self.stage1 if n == 1 else self.stage2


PRESETS: dict[str, Config] = {
    # The authors' birds configuration, PT behaviour: widths 128/64, batch 64 (I) / 16 (II) here
    # because Stage II at batch 64 needs a large GPU; 600 + 600 epochs, halving every 100.
    "paper": Config(data=DataConfig(augment="crop_flip")),
    # Small, fast networks for two CPU cores; the TF code's conditioning (CA with LeakyReLU and
    # log-sigma; D compresses the text itself, 1x1 head conv); standardized MiniLM embeddings;
    # Stage II refines the upsampled Stage-I image (it gets minutes, not days).
    "shapes-cpu": Config(
        model=ModelConfig(ngf1=16, ndf1=16, ngf2=16, ndf2=16, ca_variant="tf", d_text_path="fc", d_head_kernel=1,
                          stage2_image_skip=True),
        stage1=StageConfig(batch_size=64, minutes=15.0, sample_every=250, checkpoint_every=500),
        # G refines the Stage-I image slowly: at 2e-4 it drifted in color within 250 steps
        stage2=StageConfig(batch_size=16, lr_g=5e-5, minutes=7.0, sample_every=100, checkpoint_every=500),
    ),
}
# The fast recipe (docs/training-recipe.md): shapes-cpu plus G's image-text matching loss and an
# EMA of G's weights.
PRESETS["fast"] = replace(
    PRESETS["shapes-cpu"],
    stage1=replace(PRESETS["shapes-cpu"].stage1, match_weight=2.0, ema_decay=0.995),
    stage2=replace(PRESETS["shapes-cpu"].stage2, match_weight=2.0, ema_decay=0.995),
)
# fast with a BatchNorm-free, spectral-norm D in both stages and the hinge loss; the matching
# loss's weight rises over Stage I's first 1,000 steps (with a BN-free D and the matcher at full
# weight from step 0, G collapses to one image: docs/training-recipe.md, fifth round)
PRESETS["fast-sn"] = replace(
    PRESETS["fast"],
    model=replace(PRESETS["fast"].model, d_batchnorm=False, d_spectral_norm=True),
    stage1=replace(PRESETS["fast"].stage1, gan_loss="hinge", match_warmup=1000),
    stage2=replace(PRESETS["fast"].stage2, gan_loss="hinge"),
)
# fast-sn without Conditioning Augmentation in both stages: the text code is a deterministic
# function of the sentence, with no noise and no KL term (DF-GAN has none either). CA's noise hid
# the text from G (docs/training-recipe.md, sixth round: K2, K5); the default for Shapes.
PRESETS["fast-sn-noca"] = replace(
    PRESETS["fast-sn"],
    model=replace(PRESETS["fast-sn"].model, ca_variant="none"),
)
# fast with the sentence (and z) modulating every up-block of G in both stages (DF-GAN's fusion) and an
# XMC-GAN-style contrastive head on Stage I's D (each real image picks its caption among the batch's; G's
# images are pulled to theirs): the parts of the geometry design that help on photos. Flowers, Stage I,
# 60 minutes each on this CPU: FID 165.0 against fast's 180.4 (docs/real-data.md, twenty-first round); the
# BatchNorm-free spectral-norm D of fast-sn with the same two parts made it worse (247.6).
PRESETS["fast-fusion-contrast"] = replace(
    PRESETS["fast"],
    model=replace(PRESETS["fast"].model, g_fusion=True, d_contrast=128),
    stage1=replace(PRESETS["fast"].stage1, contrast_weight=0.2),
)
# fast-sn-noca with Stage I's object drawn as a layer (docs/training-recipe.md, tenth to seventeenth
# rounds; runs C26 and C29): placed in one of 3 x 3 cells that the sentence chooses (taught by the matcher's pick
# among the cells, a quarter of the batch a step) plus a pose head's translation, turned by z, its mask a
# radial outline of 10 harmonics, its colour patterned by 4 waves, over a background that changes only
# from top to bottom; an area prior on its mask; D's contrastive head (half its wrong captions one-word
# foils); the matcher in the attribute checker's layout, trained with shape foils on images zoomed by up
# to 2 (shipped for the built-in Shapes data: stackgan/matchers); Stage II draws only on and around the
# object (run C29: the background stays Stage I's), and Stage II's D has the contrastive head too (runs C34-S2,
# C43, C45: over 1,500 steps Stage II keeps shape and size with it and loses them without it). The default
# since the sixteenth round.
# Made for Shapes: on photos use fast-fusion-contrast, fast or a data set's preset.
PRESETS["shapes-layered"] = replace(
    PRESETS["fast-sn-noca"],
    model=replace(PRESETS["fast-sn-noca"].model, g_layered=True, g_layer_background="vertical", g_layer_spin=True,
                  g_layer_taper=True, g_layer_radial=10, g_layer_pattern=4, g_layer_cells=3, d_contrast=128,
                  stage2_masked=True),
    stage1=replace(PRESETS["fast-sn-noca"].stage1, mask_weight=5.0, mask_warmup=1000, contrast_wrong=True,
                   contrast_weight=0.2, match_foils=True, pose_pick_weight=1.0, pose_pick_share=0.25),
    stage2=replace(PRESETS["fast-sn-noca"].stage2, contrast_wrong=True, contrast_weight=0.2),
    data=replace(PRESETS["fast-sn-noca"].data, foil_share=0.5, foil_attributes="shape", matcher_trunk="checker",
                 matcher_widths=(16, 32, 64, 96, 128), matcher_foils=True, matcher_steps=3000, matcher_zoom=2.0),
)
DEFAULT_PRESET = "shapes-layered"

CHOICES = {
    "ca_variant": ("pt", "tf", "none"),
    "g1_variant": ("pt", "tf", "dfgan"),
    "d_text_path": ("mu", "fc"),
    "d_head_kernel": (1, 3),
    "text_norm": ("standardize", "none"),
    "caption_mode": ("one", "mean4"),
    "wrong_pairs": ("shift", "random", "class", "hard"),
    "augment": ("none", "crop_flip"),
    "precision": ("fp32", "bf16", "fp16"),
    "gan_loss": ("bce", "hinge"),
    "d_arch": ("dcgan", "resnet"),
    "g_layer_canvas": ("conv", "mlp"),
    "g_layer_background": ("full", "smooth", "vertical", "ramp"),
    "on_divergence": ("stop", "rollback"),
    "matcher_trunk": ("strided", "checker"),
    "d_contrast_trunk": ("d", "checker"),
}


from .errors import ConfigError  # noqa: E402  (kept importable from here)


def parse_pattern_waves(text: str, count: int) -> list[tuple[float, float]]:
    """``model.g_layer_pattern_waves``: ``"P@A,P@A,..."`` (a period of ``P`` pixels at 64 px, at ``A`` degrees
    in the object's frame) -> ``[(P, A), ...]``, one per wave (``count`` of them, ``model.g_layer_pattern``)."""
    waves = []
    for item in text.split(","):
        try:
            period, angle = (float(x) for x in item.split("@"))
        except ValueError:
            raise ConfigError(f"model.g_layer_pattern_waves: {item.strip()!r} is not PERIOD@ANGLE (pixels at 64 px "
                              f"@ degrees, e.g. 4@0)") from None
        if not period >= 2:
            raise ConfigError(f"model.g_layer_pattern_waves: a period of {period} px at 64 px is below 2 px, the "
                              f"finest a 64 px image holds")
        waves.append((period, angle))
    if len(waves) != count:
        raise ConfigError(f"model.g_layer_pattern_waves gives {len(waves)} waves for model.g_layer_pattern={count}")
    return waves


# The paper's data sets as YAML files on top of `paper` (stackgan/presets/<name>.yaml)
PRESET_DIR = Path(__file__).parent / "presets"
YAML_PRESETS = ("birds", "flowers", "coco")


def preset_names() -> list[str]:
    return list(PRESETS) + list(YAML_PRESETS)


def get_preset(name: str) -> Config:
    if name in PRESETS:
        return PRESETS[name]
    if name in YAML_PRESETS:
        return load_yaml(PRESET_DIR / f"{name}.yaml", base=PRESETS["paper"])
    raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(preset_names())}")


def to_dict(cfg: Config) -> dict[str, Any]:
    """Plain dicts, lists and scalars (tuples become lists), for YAML, JSON and state files."""
    def plain(x):
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        return list(x) if isinstance(x, tuple) else x
    return plain(dataclasses.asdict(cfg))


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def from_dict(data: dict[str, Any], base: Config | None = None, where: str = "config") -> Config:
    """Build a Config from a nested dict, checking every key and type against the dataclasses."""
    return validate(_merge(base or Config(), data, where))


def load_yaml(path: str | Path, base: Config | None = None) -> Config:
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return from_dict(data, base, where=str(path))


def apply_overrides(cfg: Config, items: list[str]) -> Config:
    """Apply ``section.key=value`` strings (values parsed as YAML scalars)."""
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        nested: dict[str, Any] = {}
        node = nested
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        if not all(parts):
            raise ConfigError(f"override {item!r}: {key!r} is not a setting name (section.key)")
        try:
            node[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: the value is not a YAML scalar ({str(e).splitlines()[0]})") from e
        cfg = _merge(cfg, nested, "override")
    return validate(cfg)


def _merge(obj: Any, data: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(obj)}
    changes = {}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"{where}: unknown key {key!r}; known keys: {', '.join(known)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"{where}: {key!r} must be a mapping")
            changes[key] = _merge(current, value, f"{where}.{key}")
        else:
            changes[key] = _coerce(value, type(current), f"{where}.{key}")
    return replace(obj, **changes)


def _coerce(value: Any, kind: type, where: str) -> Any:
    if kind is tuple:
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and v > 0 for v in value):
            raise ConfigError(f"{where}: expected a list of positive integers, got {value!r}")
        return tuple(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, str):  # YAML 1.1 reads "1e-4" (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if kind is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: expected {kind.__name__}, got {value!r}")
    return value


def validate(cfg: Config) -> Config:
    m = cfg.model
    for section in (cfg, cfg.model, cfg.data, cfg.stage1, cfg.stage2):
        for f in fields(section):
            allowed = CHOICES.get(f.name)
            if allowed and getattr(section, f.name) not in allowed:
                raise ConfigError(f"{f.name} = {getattr(section, f.name)!r}; accepted: {allowed}")
    if not 0 <= m.info_codes <= m.z_dim:
        raise ConfigError(f"model.info_codes must be in [0, model.z_dim = {m.z_dim}], got {m.info_codes}")
    for name in ("text_dim", "z_dim", "cond_dim", "ngf1", "ndf1", "ngf2", "ndf2", "nef"):
        if getattr(m, name) <= 0:
            raise ConfigError(f"model.{name} must be positive, got {getattr(m, name)}")
    if m.ngf1 % 2:
        raise ConfigError(f"model.ngf1 must be even (Stage I ends with ngf1/2 channels), got {m.ngf1}")
    if m.ngf2 % 4:
        raise ConfigError(f"model.ngf2 must be divisible by 4 (Stage II ends with ngf2/4), got {m.ngf2}")
    if m.g_layer_anchor_sample and not m.g_layer_anchors:
        raise ConfigError("model.g_layer_anchor_sample needs the anchor grid (model.g_layer_anchors, e.g. 3)")
    if m.g_layer_radial and m.g_layer_templates:
        raise ConfigError("model.g_layer_radial and model.g_layer_templates both make the object's mask; set one")
    if m.g_layer_sides and not cfg.stage1.pose_pick_weight:
        raise ConfigError("model.g_layer_sides learns the side from the matcher's pick: set stage1.pose_pick_weight "
                          "(e.g. 1)")
    if m.stage2_render and not (m.stage2_image_skip and m.g_layered and m.g_layer_background != "full"):
        raise ConfigError("model.stage2_render starts Stage II from the layered Stage I's scene drawn at 256 px: it "
                          "needs model.stage2_image_skip, model.g_layered and a smooth background "
                          "(model.g_layer_background=smooth, vertical or ramp)")
    if m.stage2_pattern and not (m.stage2_render and m.g_layer_pattern and not m.g_layer_textures):
        raise ConfigError("model.stage2_pattern gives Stage II its own copy of Stage I's pattern head, drawn in the "
                          "scene at 256 px: it needs model.stage2_render and model.g_layer_pattern (without "
                          "model.g_layer_textures)")
    if m.stage2_sharp and not (m.stage2_render and m.g_layer_radial):
        raise ConfigError("model.stage2_sharp draws the layered Stage I's radial outline at 256 px: it needs "
                          "model.stage2_render and model.g_layer_radial")
    if m.stage2_mask_grow < 0:
        raise ConfigError(f"model.stage2_mask_grow must be >= 0 (pixels at 64 px), got {m.stage2_mask_grow}")
    if m.stage2_masked and not (m.stage2_image_skip and m.g_layered):
        raise ConfigError("model.stage2_masked lets Stage II change only the pixels near the layered Stage I's "
                          "object: it needs model.stage2_image_skip and model.g_layered")
    if m.g_layer_cells and not cfg.stage1.pose_pick_weight:
        raise ConfigError("model.g_layer_cells learns the column and row from the matcher's pick: set "
                          "stage1.pose_pick_weight (e.g. 1)")
    if m.g_layer_sizes and (m.g_layer_sizes < 2 or not m.g_layer_cells):
        raise ConfigError(f"model.g_layer_sizes must be at least 2 and goes with model.g_layer_cells (the matcher "
                          f"picks the size as it picks the cell); got {m.g_layer_sizes}")
    if m.g_layer_textures and (m.g_layer_textures < 2 or not m.g_layer_cells or not m.g_layer_pattern):
        raise ConfigError(f"model.g_layer_textures must be at least 2 and goes with model.g_layer_cells (the matcher "
                          f"picks the texture as it picks the cell) and model.g_layer_pattern (the waves it "
                          f"draws); got {m.g_layer_textures}")
    if m.g_layer_cells and (m.g_layer_sides or m.g_layer_anchors or m.g_layer_cells < 2):
        raise ConfigError(f"model.g_layer_cells must be at least 2 (A columns and A rows) and does not go with "
                          f"model.g_layer_sides or model.g_layer_anchors; got {m.g_layer_cells}")
    if m.g_layer_sides and m.g_layer_anchors:
        raise ConfigError("model.g_layer_sides chooses the side of the one placement; it does not go with "
                          "model.g_layer_anchors")
    if m.g_layer_pattern and m.g_layer_anchors:
        raise ConfigError("model.g_layer_pattern is drawn at one placement; it does not go with model.g_layer_anchors")
    for name in ("g_layer_templates", "g_layer_pose_hidden", "g_layer_radial", "g_layer_pattern"):
        if getattr(m, name) < 0:
            raise ConfigError(f"model.{name} must be >= 0, got {getattr(m, name)}")
    if m.g_layer_anchors < 0 or m.g_layer_anchors == 1:
        raise ConfigError(f"model.g_layer_anchors must be 0 (off) or at least 2 (an A x A grid), "
                          f"got {m.g_layer_anchors}")
    if m.g_layer_pattern_waves:
        parse_pattern_waves(m.g_layer_pattern_waves, m.g_layer_pattern)
        if m.g_layer_pattern_pairs:
            raise ConfigError("model.g_layer_pattern_waves gives the waves; they are not learned in pairs "
                              "(model.g_layer_pattern_pairs)")
    if m.g_layer_pattern_pairs and (m.g_layer_pattern < 2 or m.g_layer_pattern % 2):
        raise ConfigError(f"model.g_layer_pattern_pairs needs an even number >= 2 of waves (model.g_layer_pattern), "
                          f"got {m.g_layer_pattern}")
    if m.g_layer_pattern_text and (not m.g_layer_pattern or m.g_layer_textures):
        raise ConfigError("model.g_layer_pattern_text gives the pattern's head the sentence: it needs the pattern "
                          "(model.g_layer_pattern, e.g. 4) and no texture choice (model.g_layer_textures=0)")
    if m.g_layer_pattern_inset < 0 or (m.g_layer_pattern_inset and not m.g_layer_pattern):
        raise ConfigError(f"model.g_layer_pattern_inset is a margin in pixels >= 0 kept free of the pattern: it needs "
                          f"the pattern (model.g_layer_pattern, e.g. 4); got {m.g_layer_pattern_inset}")
    for name in ("g_layer_spin", "g_layer_taper", "g_layer_round", "g_layer_radial", "g_layer_pattern",
                 "g_layer_pattern_text", "g_layer_normalize", "g_layer_sides", "g_layer_cells", "g_layer_sizes",
                 "g_layer_textures", "g_layer_pose_text", "g_layer_templates", "g_layer_pose_hidden",
                 "g_layer_anchors"):
        if getattr(m, name) and not m.g_layered:
            raise ConfigError(f"model.{name} needs the layered generator (model.g_layered=true)")
    if cfg.stage2.mask_weight:
        raise ConfigError("stage2.mask_weight must be 0: the area prior acts on Stage I's layered generator")
    for n in (1, 2):  # three ways to change the outline prior: each needs the prior, and one at a time
        ways = [w for w in ("outline_symmetric", "outline_shape", "outline_target") if getattr(cfg.stage(n), w)]
        for w in ways:
            if not cfg.stage(n).outline_weight:
                raise ConfigError(f"stage{n}.{w} changes the outline prior: it needs stage{n}.outline_weight > 0")
        if len(ways) > 1:
            raise ConfigError(f"stage{n}.outline_symmetric, outline_shape and outline_target are three ways to change "
                              "the outline prior: choose one")
        if cfg.stage(n).outline_phase and not cfg.stage(n).outline_target:
            raise ConfigError(f"stage{n}.outline_phase turns outline_target's aims: it needs "
                              f"stage{n}.outline_target=true")
    if cfg.stage2.outline_weight:
        raise ConfigError("stage2.outline_weight must be 0: the outline prior acts on Stage I's radial outline")
    if cfg.stage2.size_weight:
        raise ConfigError("stage2.size_weight must be 0: the size prior acts on Stage I's radial outline")
    if cfg.stage1.size_weight and (not m.g_layer_radial or m.g_layer_normalize):
        raise ConfigError("stage1.size_weight needs the radial outline (model.g_layered=true, model.g_layer_radial=K) "
                          "placed without model.g_layer_normalize")
    if cfg.stage1.outline_weight and not m.g_layer_radial:
        raise ConfigError("stage1.outline_weight needs the radial outline (model.g_layered=true, "
                          "model.g_layer_radial=K)")
    if cfg.stage1.mask_weight and not m.g_layered:
        raise ConfigError("stage1.mask_weight needs the layered generator (model.g_layered=true)")
    if m.d_contrast_trunk != "d" and not m.d_contrast:
        raise ConfigError("model.d_contrast_trunk needs D's contrastive head (model.d_contrast, e.g. 128)")
    if m.d_contrast_fake and not m.d_contrast:
        raise ConfigError("model.d_contrast_fake needs D's contrastive head (model.d_contrast, e.g. 128)")
    if m.d_contrast < 0:
        raise ConfigError(f"model.d_contrast must be >= 0, got {m.d_contrast}")
    for n in (1, 2):
        if cfg.stage(n).contrast_weight and not m.d_contrast:
            raise ConfigError(f"stage{n}.contrast_weight needs D's contrastive head (model.d_contrast, e.g. 128)")
        if cfg.stage(n).contrast_wrong and not cfg.stage(n).contrast_weight:
            raise ConfigError(f"stage{n}.contrast_wrong picks candidates for the contrastive loss, which is off: "
                              f"set stage{n}.contrast_weight (e.g. 0.2) too")
        if cfg.stage(n).contrast_temp <= 0:
            raise ConfigError(f"stage{n}.contrast_temp must be > 0, got {cfg.stage(n).contrast_temp}")
    if not 0 < m.g_layer_scale0 <= 1:
        raise ConfigError(f"model.g_layer_scale0 must be in (0, 1], got {m.g_layer_scale0}")
    if m.g_layer_scale0 != ModelConfig.g_layer_scale0 and not m.g_layered:
        raise ConfigError("model.g_layer_scale0 needs the layered generator (model.g_layered=true)")
    if m.g_layer_background != "full" and not m.g_layered:
        raise ConfigError(f"model.g_layer_background={m.g_layer_background} needs the layered generator "
                          "(model.g_layered=true)")
    if m.res_blocks < 0:
        raise ConfigError(f"model.res_blocks must be >= 0, got {m.res_blocks}")
    if cfg.recompute_blocks < 0:
        raise ConfigError(f"recompute_blocks must be >= 0, got {cfg.recompute_blocks}")
    if cfg.recompute_blocks and cfg.compile:
        raise ConfigError("recompute_blocks > 0 does not work with compile=true (torch.compile fails to build "
                          "the backward pass of the recomputed blocks, torch 2.14); set one of them to 0/false")
    for name in ("matcher_steps", "matcher_batch"):
        if getattr(cfg.data, name) < 1:
            raise ConfigError(f"data.{name} must be >= 1, got {getattr(cfg.data, name)}")
    if not 0 <= cfg.data.foil_share <= 1:
        raise ConfigError(f"data.foil_share must be in [0, 1], got {cfg.data.foil_share}")
    from .data.foils import foil_weights
    for name in ("foil_attributes", "matcher_foil_attributes"):  # D's foils' words, and the matcher's own
        value = getattr(cfg.data, name)
        if not value:
            continue
        if "+" in value and name == "foil_attributes":
            raise ConfigError(f"data.foil_attributes={value!r}: sets joined by '+' (one foil of each) are for "
                              "the matcher's foils only (data.matcher_foil_attributes); D's foils are one list")
        for names in value.split("+"):
            foil_weights(names)  # a ConfigError naming the bad attribute
        if cfg.data.text_encoder == "precomputed":
            raise ConfigError(f"data.{name} picks the words of caption foils; precomputed vectors bring "
                              "their own foils (stackgan data attributes --foil-attributes)")
    if cfg.data.matcher_foil_attributes and not cfg.data.matcher_foils:
        raise ConfigError("data.matcher_foil_attributes picks the words of the matcher's caption foils: it needs "
                          "data.matcher_foils=true")
    if cfg.data.swap_attribute:
        from .data.shapes import ATTRIBUTES
        if cfg.data.swap_attribute not in ATTRIBUTES:
            raise ConfigError(f"data.swap_attribute must be one of {', '.join(ATTRIBUTES)}; got "
                              f"{cfg.data.swap_attribute!r}")
        if cfg.data.text_encoder == "precomputed":
            raise ConfigError("data.swap_attribute swaps the words of the captions and encodes them; precomputed "
                              "vectors have no words to swap")
    if cfg.data.foils_per_image < 1:
        raise ConfigError(f"data.foils_per_image must be >= 1, got {cfg.data.foils_per_image}")
    if cfg.data.matcher_hard < 0:
        raise ConfigError(f"data.matcher_hard must be >= 0, got {cfg.data.matcher_hard}")
    for name in ("matcher_zoom", "matcher_stretch"):
        if getattr(cfg.data, name) < 1:
            raise ConfigError(f"data.{name} must be >= 1 (1: off), got {getattr(cfg.data, name)}")
    if cfg.data.matcher_size not in (64, 128):
        raise ConfigError(f"data.matcher_size must be 64 or 128, got {cfg.data.matcher_size}")
    if not 1 <= len(cfg.data.matcher_widths) <= 6:
        raise ConfigError(f"data.matcher_widths needs 1 to 6 stages (64 px halves each), got {cfg.data.matcher_widths}")
    for n in (1, 2):
        s = cfg.stage(n)
        if s.batch_size < 2:
            raise ConfigError(f"stage{n}.batch_size must be >= 2 (wrong pairs need two), got {s.batch_size}")
        for name in ("lr_g", "lr_d", "max_steps", "minutes", "epochs", "lr_decay_epochs", "match_weight",
                     "match_warmup", "recon_weight", "latent_kl_weight", "d_translate", "d_noise", "gp_weight",
                     "info_weight", "mask_weight", "mask_warmup", "contrast_weight", "pose_pick_weight",
                     "consistency_weight", "outline_weight", "outline_start", "size_weight", "g_hold"):
            if getattr(s, name) < 0:
                raise ConfigError(f"stage{n}.{name} must be >= 0, got {getattr(s, name)}")
        if not 0 <= s.ema_decay < 1:
            raise ConfigError(f"stage{n}.ema_decay must be in [0, 1), got {s.ema_decay}")
        if s.gp_power <= 0:
            raise ConfigError(f"stage{n}.gp_power must be > 0, got {s.gp_power}")
        if s.match_foils and not (s.match_weight and cfg.data.foil_share):
            raise ConfigError(f"stage{n}.match_foils adds D's one-word foils to the matching loss: it needs "
                              f"stage{n}.match_weight > 0 and data.foil_share > 0")
        if s.pose_pick_weight and (n == 2 or not s.match_weight or not cfg.model.g_layered
                                   or cfg.model.g_layer_anchors):
            raise ConfigError(f"stage{n}.pose_pick_weight mirrors Stage I's layered object (model.g_layered, without "
                              f"model.g_layer_anchors) and lets the frozen matcher pick: it needs stage1 and "
                              f"stage1.match_weight > 0")
        for name in ("pose_pick_share", "match_share"):
            if not 0 < getattr(s, name) <= 1:
                raise ConfigError(f"stage{n}.{name} must be in (0, 1], got {getattr(s, name)}")
        if n == 1 and s.consistency_weight:
            raise ConfigError("stage1.consistency_weight must be 0: it keeps Stage II's image, resized to 64 px, at "
                              "Stage I's (set stage2.consistency_weight)")
        if s.swap_weight < 0 or not 0 < s.swap_share <= 1:
            raise ConfigError(f"stage{n}.swap_weight must be >= 0 and stage{n}.swap_share in (0, 1]; got "
                              f"{s.swap_weight} and {s.swap_share}")
        if s.image_pair_weight < 0 or (s.image_pair_weight and not s.match_weight):
            raise ConfigError(f"stage{n}.image_pair_weight compares G's images with the real ones in the frozen "
                              f"matcher's space: it must be >= 0 and needs stage{n}.match_weight > 0; got "
                              f"{s.image_pair_weight}")
        resolution = 64 if n == 1 else 256
        if s.patch_weight < 0 or s.patch_r1 < 0 or not 8 <= s.patch_size <= resolution:
            raise ConfigError(f"stage{n}.patch_weight and stage{n}.patch_r1 must be >= 0 and stage{n}.patch_size in "
                              f"[8, {resolution}] (pixels at the stage's resolution); got {s.patch_weight}, "
                              f"{s.patch_r1} and {s.patch_size}")
        if s.swap_weight:
            m = cfg.model
            if n == 2 and not s.match_weight:
                raise ConfigError("stage2.swap_weight: the frozen matcher must pick each caption among its "
                                  "texture-word swaps from Stage II's image: it needs stage2.match_weight > 0")
            if n == 2 and s.swap_detach:
                raise ConfigError("stage2.swap_detach detaches the layered Stage I's pattern input, which Stage II "
                                  "does not train: leave it false")
            if n == 1 and not (s.match_weight and m.g_layered and m.g_layer_pattern and not m.g_layer_anchors):
                raise ConfigError("stage1.swap_weight redraws Stage I's layered object's pattern for the frozen "
                                  "matcher: it needs stage1.match_weight > 0, model.g_layered and "
                                  "model.g_layer_pattern (without model.g_layer_anchors)")
            if cfg.data.swap_attribute != "texture":
                raise ConfigError(f"stage{n}.swap_weight compares the caption with its texture word swapped: set "
                                  "data.swap_attribute=texture")
            if n == 1 and m.g_layer_textures and m.g_layer_textures != 3:
                raise ConfigError(f"stage{n}.swap_weight with model.g_layer_textures teaches texture state k the "
                                  f"k-th texture word (solid, striped, dotted): it needs 3 textures, got "
                                  f"{m.g_layer_textures}")
            if cfg.data.caption_mode != "one":
                raise ConfigError(f"stage{n}.swap_weight swaps the words of the step's one caption: it needs "
                                  "data.caption_mode=one")
        if s.contrast_zoom < 1:
            raise ConfigError(f"stage{n}.contrast_zoom must be >= 1 (1: off), got {s.contrast_zoom}")
        if s.contrast_zoom > 1 and not s.contrast_weight:
            raise ConfigError(f"stage{n}.contrast_zoom zooms the images of the contrastive loss, which is off "
                              f"(stage{n}.contrast_weight is 0)")
        for name in ("log_every", "sample_every", "checkpoint_every", "keep_checkpoints", "gp_every"):
            if getattr(s, name) < 1:
                raise ConfigError(f"stage{n}.{name} must be >= 1, got {getattr(s, name)}")
    return cfg
