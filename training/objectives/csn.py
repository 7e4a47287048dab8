"""The Conditional Similarity Network objective (Veit et al., CVPR 2017), built from PML parts.

For each triplet (anchor, close, far, aspect), the three embeddings are multiplied by the aspect's
mask and compared with a triplet margin loss on their L2-normalised forms (the service scores with
the cosine of exactly these). The original's regularisers are added: 5e-3 x the mean embedding
norm, and 5e-4 x the L1 norm of the (ReLU'd) mask table when masks are learned.

A model without masks makes this the *standard triplet network* baseline: one embedding for every
notion of similarity. ``overall_weight`` > 0 adds an ArcFace loss on the unmasked embedding with
joint labels (alike on every aspect), so the overall embedding stays a strong retrieval embedding.

``instance_weight`` > 0 adds the instance term (training.objectives.instance) between each anchor
and a second, edited view of it, on the unmasked embedding: the same image after edits stays the
nearest thing to itself while the masks learn what "alike" means per aspect. With a split
embedding (``instance_dims`` = k > 0) the instance term has the last k dimensions to itself, and
the triplets, the overall loss and the aspect losses see only the first D - k (the masks are zero
on the rest), so "which image" and "which kind" do not compete for the same dimensions.

``aspect_weight`` > 0 adds, for each aspect, a normalised-softmax proxy loss in that aspect's masked
space with that aspect's labels. Random triplets give a weak, noisy signal (most are already
satisfied, a few conflict across aspects); one proxy per aspect value pulls every image of the
batch towards its value in every space at once. Without masks (the standard triplet network) the
same losses act on one shared embedding and must conflict, which is the point of the comparison.
"""

from __future__ import annotations

import torch
from pytorch_metric_learning import losses
from pytorch_metric_learning.distances import LpDistance
from torch import nn

from training.objectives.base import LossOutput, Objective
from training.objectives.instance import build_instance_loss


class ConditionalTripletObjective(Objective):
    batch_kind = "triplets"

    def __init__(self, margin: float = 0.2, embed_norm_weight: float = 5e-3, mask_l1_weight: float = 5e-4,
                 overall_loss: nn.Module | None = None, overall_weight: float = 0.0,
                 aspect_losses: list[nn.Module] | None = None, aspect_weight: float = 0.0,
                 instance: nn.Module | None = None, instance_weight: float = 0.0, instance_dims: int = 0) -> None:
        super().__init__()
        self.triplet = losses.TripletMarginLoss(margin=margin, distance=LpDistance(normalize_embeddings=True))
        self.embed_norm_weight = embed_norm_weight
        self.mask_l1_weight = mask_l1_weight
        self.overall_loss = overall_loss
        self.overall_weight = overall_weight
        self.aspect_losses = nn.ModuleList(aspect_losses or [])
        self.aspect_weight = aspect_weight
        self.instance, self.instance_weight = instance, instance_weight
        self.instance_dims = instance_dims

    def forward(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> LossOutput:
        n = len(batch["aspect"])
        views = [batch["images_anchor"], batch["images_close"], batch["images_far"]]
        with_instance = self.instance is not None and self.instance_weight > 0
        # The members with an edited view: the anchors, or all three (data: objective.instance_views).
        viewed = [name for name in ("anchor", "close", "far") if f"images_{name}_view" in batch] if with_instance else []
        views += [batch[f"images_{name}_view"] for name in viewed]
        # Plain (untinted) images and their edited views, for the instance term only (objective.instance_plain).
        plain = with_instance and "images_plain" in batch
        if plain:
            views += [batch["images_plain"], batch["images_plain_view"]]
        out = model(torch.cat(views), raw=True)
        stats: dict[str, float] = {}
        instance = None
        if with_instance:  # split off the edited views; the rest is the triplets' as before
            if isinstance(out, tuple):
                extra, out = out[0][3 * n:], (out[0][:3 * n], out[1])
            else:
                extra, out = out[3 * n:], out[:3 * n]
            instance_view = extra[:len(viewed) * n]
        if isinstance(out, tuple):
            raw, masks = out
            compared = raw * masks[batch["aspect"]].repeat(3, 1)
        else:
            raw, masks, compared = out, None, out
        k = self.instance_dims
        kind = raw[:, :-k] if k else raw  # the class dimensions (all of them without a split)
        index = torch.arange(n, device=raw.device)
        loss = self.triplet(compared, indices_tuple=(index, index + n, index + 2 * n))
        stats["triplet_loss"] = float(loss.detach())
        loss = loss + self.embed_norm_weight * raw.norm(dim=1).mean()
        if masks is not None and masks.requires_grad:
            loss = loss + self.mask_l1_weight * masks.abs().sum()
        if self.overall_loss is not None and self.overall_weight > 0:
            labels = batch["labels"].T.reshape(-1)  # anchors, then closes, then fars, like ``images``
            overall = self.overall_loss(kind, labels)
            stats["overall_loss"] = float(overall.detach())
            loss = loss + self.overall_weight * overall
        if len(self.aspect_losses) and self.aspect_weight > 0:
            aspect_labels = batch["aspect_labels"].transpose(0, 1).reshape(-1, len(self.aspect_losses))
            per_aspect = torch.stack([
                self.aspect_losses[a](kind * masks[a, :kind.shape[1]] if masks is not None else kind, aspect_labels[:, a])
                for a in range(len(self.aspect_losses))]).mean()
            stats["aspect_loss"] = float(per_aspect.detach())
            loss = loss + self.aspect_weight * per_aspect
        if with_instance:
            m = len(instance_view)
            originals = raw[:m]  # anchors, then closes, then fars: the views' order
            if plain:  # in ``extra`` the plain images follow the members' views, and their views follow them
                originals, instance_view = torch.cat([originals, extra[m:m + n]]), torch.cat([instance_view, extra[m + n:]])
            instance = (self.instance(originals[:, -k:], instance_view[:, -k:]) if k
                        else self.instance(originals, instance_view))
            stats["instance_loss"] = float(instance.detach())
            loss = loss + self.instance_weight * instance
        return LossOutput(loss, stats)


def build_csn_objective(config, num_classes: int, embedding_dim: int, aspect_classes: list[int],
                        instance_dims: int = 0) -> Objective:
    if instance_dims and not config.instance_weight > 0:
        raise ValueError("model.instance_dims needs objective.instance_weight > 0")
    kind_dim = embedding_dim - instance_dims  # the dimensions the class and aspect losses see
    overall = None
    if config.overall_weight > 0 and config.overall_loss == "normalized-softmax":
        overall = losses.NormalizedSoftmaxLoss(num_classes, kind_dim, temperature=1 / (config.scale or 20))
    elif config.overall_weight > 0:
        overall = losses.ArcFaceLoss(num_classes, kind_dim, margin=28.6, scale=config.scale or 64)
    aspect_losses = None
    if config.aspect_weight > 0:
        aspect_losses = [losses.NormalizedSoftmaxLoss(n, kind_dim, temperature=0.05) for n in aspect_classes]
    margin = config.margin if config.margin is not None else 0.2
    instance = None
    if config.instance_weight > 0:
        instance = build_instance_loss(config.instance_loss, config.instance_temperature, config.instance_margin)
    return ConditionalTripletObjective(margin, config.embed_norm_weight, config.mask_l1_weight, overall,
                                       config.overall_weight, aspect_losses, config.aspect_weight,
                                       instance, config.instance_weight, instance_dims)
