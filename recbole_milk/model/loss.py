"""Losses shared by the plugin's models: BPR, embedding norms, contrastive, alignment and distribution terms."""
import torch
import torch.nn.functional as F


def bpr_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
    """Batch mean of -log sigmoid(pos - neg), computed stably."""
    return F.softplus(neg_scores - pos_scores).mean()


def squared_norm(*tensors: torch.Tensor) -> torch.Tensor:
    """Batch mean of the summed squared row norms of `tensors` (each (batch, d)): an embedding regulariser."""
    return sum(t.pow(2).sum(dim=1) for t in tensors).mean()


def contrastive_loss(anchors: torch.Tensor, positives: torch.Tensor, negatives: torch.Tensor,
                     same: torch.Tensor, temperature: float) -> torch.Tensor:
    """Batch mean of -log softmax of the positive among [positive, negatives] (InfoNCE on inner products).

    anchors, positives: (B, d); negatives: (K, d), shared by all rows; same: bool (B, K), True where a negative is
    the row's own positive item (left out of that row's softmax).
    """
    positive_logit = (anchors * positives).sum(dim=1, keepdim=True)
    negative_logits = (anchors @ negatives.t()).masked_fill(same, float("-inf"))
    logits = torch.cat([positive_logit, negative_logits], dim=1) / temperature
    return (torch.logsumexp(logits, dim=1) - logits[:, 0]).mean()


def alignment_loss(modality_embeddings: torch.Tensor, availability: torch.Tensor) -> torch.Tensor:
    """Masked cross-modality alignment (MILK, paper eq. 6) as an element-wise MSE.

    modality_embeddings: (n, M, D) per-modality embeddings; availability: (n, M) bool.
    Every unordered modality pair (m, m') that item j has both of contributes ||c_j^m - c_j^m'||^2 / D; the loss is
    the mean of these terms over all such (item, pair) terms, and 0 when there is none.
    """
    num_modalities = modality_embeddings.shape[1]
    first, second = torch.triu_indices(num_modalities, num_modalities, offset=1, device=availability.device)
    valid = availability.index_select(1, first) & availability.index_select(1, second)
    # index_select, not advanced indexing: its backward is an index add, where indexing's is an accumulating
    # index put (about 6.5% of the CPU time of a TikTok training step's forward and backward).
    pairs = modality_embeddings.index_select(1, first) - modality_embeddings.index_select(1, second)
    squared = pairs.pow(2).mean(dim=-1)
    total = torch.where(valid, squared, torch.zeros_like(squared)).sum()
    return total / valid.sum().clamp(min=1).to(total.dtype)


def masked_mse(predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Element-wise MSE over the rows of (n, M, D) tensors where `mask` (n, M) is True; 0 when none is."""
    squared = (predicted - target).pow(2).mean(dim=-1)
    total = torch.where(mask, squared, torch.zeros_like(squared)).sum()
    return total / mask.sum().clamp(min=1).to(total.dtype)


def gaussian_kl(mu_q: torch.Tensor, logvar_q: torch.Tensor, mu_p: torch.Tensor, logvar_p: torch.Tensor) -> torch.Tensor:
    """Element-wise KL(N(mu_q, exp(logvar_q)) || N(mu_p, exp(logvar_p))) of diagonal Gaussians."""
    return 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + (mu_q - mu_p).pow(2)) / logvar_p.exp() - 1.0)


def uniformity(x: torch.Tensor) -> torch.Tensor:
    """log of the mean over pairs i != j of exp(-2 ||x_i - x_j||^2), rows L2-normalised (Wang and Isola, 2020);
    lower is more uniform. For unit rows ||x_i - x_j||^2 = 2 - 2 <x_i, x_j>: one matrix product."""
    unit = F.normalize(x, dim=1)
    n = unit.shape[0]
    if n < 2:
        return unit.new_zeros(())
    kernel = torch.exp(-2.0 * (2.0 - 2.0 * unit @ unit.t()))
    off_diagonal = kernel.sum() - kernel.diagonal().sum()
    return torch.log(off_diagonal / (n * (n - 1)))
