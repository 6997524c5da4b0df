"""StackGAN's losses as small pure functions on logits (computed in fp32)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from .errors import ConfigError


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def _hinge(logits: torch.Tensor, target: float) -> torch.Tensor:
    """max(0, 1 - x) for target 1, max(0, 1 + x) for target 0, averaged."""
    sign = 1.0 if target == 1.0 else -1.0
    return F.relu(1.0 - sign * logits.float()).mean()


def discriminator_loss(real: torch.Tensor, wrong: torch.Tensor, fake: torch.Tensor,
                       uncond_real: torch.Tensor | None = None,
                       uncond_fake: torch.Tensor | None = None, kind: str = "bce") -> dict[str, torch.Tensor]:
    """Matching-aware D loss on logits.

    (real image, its text) -> 1; (real image, wrong text) -> 0; (fake image, its text) -> 0.
    ``L_D = L_real + 0.5 * (L_wrong + L_fake)``; with unconditional logits (PT Stage II)
    ``L_D = (L_real + L_uncond_real) / 2 + (L_fake + L_wrong + L_uncond_fake) / 3``. Each term
    is binary cross-entropy (``kind="bce"``, the paper) or the hinge loss (``kind="hinge"``).
    The sum of :func:`discriminator_loss_real` and :func:`discriminator_loss_fake`.
    """
    on_real = discriminator_loss_real(real, wrong, uncond_real, kind)
    on_fake = discriminator_loss_fake(fake, uncond_fake, kind)
    return {**on_real, **on_fake, "total": on_real["total"] + on_fake["total"]}


def _term(kind: str):
    if kind not in ("bce", "hinge"):
        raise ConfigError(f"GAN loss must be 'bce' or 'hinge', got {kind!r}")
    return _bce if kind == "bce" else _hinge


def discriminator_loss_real(real: torch.Tensor, wrong: torch.Tensor, uncond_real: torch.Tensor | None = None,
                            kind: str = "bce") -> dict[str, torch.Tensor]:
    """The terms of :func:`discriminator_loss` on real images (right and wrong text); ``total`` is
    their weighted share of ``L_D``. With the fake side's share, lets D's backward pass run on one
    graph at a time."""
    term = _term(kind)
    parts = {"real": term(real, 1.0), "wrong": term(wrong, 0.0)}
    if uncond_real is None:
        parts["total"] = parts["real"] + 0.5 * parts["wrong"]
    else:
        parts["uncond_real"] = term(uncond_real, 1.0)
        parts["total"] = (parts["real"] + parts["uncond_real"]) / 2 + parts["wrong"] / 3
    return parts


def discriminator_loss_fake(fake: torch.Tensor, uncond_fake: torch.Tensor | None = None,
                            kind: str = "bce") -> dict[str, torch.Tensor]:
    """The terms of :func:`discriminator_loss` on generated images; ``total`` is their share of ``L_D``."""
    term = _term(kind)
    parts = {"fake": term(fake, 0.0)}
    if uncond_fake is None:
        parts["total"] = 0.5 * parts["fake"]
    else:
        parts["uncond_fake"] = term(uncond_fake, 0.0)
        parts["total"] = (parts["fake"] + parts["uncond_fake"]) / 3
    return parts


def generator_loss(fake: torch.Tensor, uncond_fake: torch.Tensor | None = None, kind: str = "bce") -> torch.Tensor:
    """``kind="bce"``: non-saturating, BCE of D(fake, its text) against 1; ``"hinge"``: -D(fake, its
    text), averaged. Plus the same for the unconditional logits when given."""
    def term(x):
        return _bce(x, 1.0) if kind == "bce" else -x.float().mean()
    loss = term(fake)
    if uncond_fake is not None:
        loss = loss + term(uncond_fake)
    return loss


def kl_loss(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)), averaged over batch and dimensions."""
    mu, logvar = mu.float(), logvar.float()
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).mean()


def matching_aware_gradient_penalty(logits: torch.Tensor, inputs: tuple[torch.Tensor, ...],
                                    power: float = 6.0) -> torch.Tensor:
    """``mean_i(||grad_i||^power)``, where ``grad_i`` joins the gradients of sample i's logit with
    respect to every tensor of ``inputs`` (DF-GAN's MA-GP: the real image and its sentence
    embedding, Tao et al., CVPR 2022; with the image alone and ``power=2`` it is R1's
    ``E||grad_x D||^2``, Mescheder et al., ICML 2018). The graph is kept, so the penalty trains D.
    ``inputs`` must require gradients and have produced ``logits``."""
    grads = torch.autograd.grad(logits.float().sum(), inputs, create_graph=True)
    flat = torch.cat([g.reshape(g.shape[0], -1).float() for g in grads], dim=1)  # [B, sum of sizes]
    return flat.pow(2).sum(1).pow(power / 2).mean()  # ||g||^p, no sqrt: a finite gradient at g = 0


def same_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[A, B]`` booleans: row i of ``a [A, D]`` equals row j of ``b [B, D]`` exactly. Each distinct row is
    numbered once (``torch.unique``), so the cost is a sort of ``A + B`` rows, not ``A x B x D`` comparisons."""
    ids = torch.unique(torch.cat([a, b]), dim=0, return_inverse=True)[1]
    return ids[:len(a), None] == ids[None, len(a):]


def contrastive_loss(image: torch.Tensor, text: torch.Tensor, condition: torch.Tensor,
                     temperature: float = 0.1, candidates: torch.Tensor | None = None,
                     candidate_condition: torch.Tensor | None = None, fake: torch.Tensor | None = None,
                     generated: bool = False) -> torch.Tensor:
    """InfoNCE from images to texts (XMC-GAN's image-sentence term, Zhang et al., CVPR 2021):
    each image's embedding ``image [B, E]`` must pick its own text's embedding among the batch's
    ``text [B, E]`` (both L2-normalised here; cosine over ``temperature``), and among the extra
    ``candidates [M, E]`` when given (e.g. one-word foils of the batch's captions, whose
    ``candidate_condition [M, T]`` says which caption each came from). Captions whose condition
    (the embedding they came from, ``condition [B, T]``) is identical to an image's own are all
    right answers, each with an equal share of the target, so that a repeated caption is not a
    negative of itself.

    ``fake [E]`` (not in XMC-GAN; ``model.d_contrast_fake``) is one more candidate, a learned
    "generated image" text: never the right answer, unless ``generated``, when it is the only one
    (D's update on G's images), so that the head cannot be satisfied by images that are not real."""
    conditions = condition
    if candidates is not None:
        text, conditions = torch.cat([text, candidates]), torch.cat([condition, candidate_condition])
    image, text = F.normalize(image.float(), dim=1), F.normalize(text.float(), dim=1)
    logits = image @ text.T / temperature  # [B, B (+ M)]
    same = same_rows(condition, conditions).float()  # [B, B (+ M)], 1 at (i, i)
    if fake is not None:
        fake_logit = image @ F.normalize(fake.float(), dim=0) / temperature  # [B]
        logits = torch.cat([logits, fake_logit[:, None]], 1)  # [B, B (+ M) + 1]
        same = torch.cat([torch.zeros_like(same) if generated else same, torch.full_like(same[:, :1], float(generated))], 1)
    elif generated:
        raise ValueError("generated=True needs the fake candidate")
    target = same / same.sum(1, keepdim=True)
    return -(target * F.log_softmax(logits, dim=1)).sum(1).mean()
