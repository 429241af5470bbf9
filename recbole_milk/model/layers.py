"""Layers shared by the plugin's models: MLPs, per-modality extractors and imputers, content encoders, experts."""
from typing import Callable, Dict, List, Sequence

import torch
import torch.nn as nn

from recbole_milk.options import one_of

ACTIVATIONS: Dict[str, Callable[[], nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "leakyrelu": nn.LeakyReLU,
    "sigmoid": nn.Sigmoid,
}
ACTIVATION_RULE = one_of(*ACTIVATIONS)


def mlp(input_size: int, hidden_sizes: Sequence[int], output_size: int, activation: str) -> nn.Sequential:
    """Affine layers input -> hidden_sizes... -> output with `activation` between them (none after the last)."""
    sizes = [input_size, *hidden_sizes, output_size]
    layers: List[nn.Module] = []
    for index, (size_in, size_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        if index > 0:
            layers.append(ACTIVATIONS[activation]())
        layers.append(nn.Linear(size_in, size_out))
    return nn.Sequential(*layers)


class ModalityExtractors(nn.ModuleList):
    """One network per modality, from its feature rows (n, d_m) to a shared space: (n, M, D) embeddings.

    With no hidden sizes each network is one affine map (MILK's extractors); otherwise an MLP. A list of
    networks, so the paper's extractors keep their plain parameter names (extractors.<m>.weight).
    """

    def __init__(self, modality_sizes: Sequence[int], output_size: int, hidden_sizes: Sequence[int] = (),
                 activation: str = "tanh"):
        super().__init__(nn.Linear(size, output_size) if not hidden_sizes
                         else mlp(size, hidden_sizes, output_size, activation) for size in modality_sizes)

    def forward(self, rows: Sequence[torch.Tensor]) -> torch.Tensor:
        return torch.stack([network(part) for network, part in zip(self, rows)], dim=1)


class CrossModalImputer(nn.Module):
    """Predicts each modality's embedding from the mean embedding of the item's other available modalities.

    One affine map per modality. predict() returns, for every (item, modality), the prediction from the item's
    other available modalities; rows with no other available modality get `fallback` unchanged.
    """

    def __init__(self, num_modalities: int, embedding_size: int):
        super().__init__()
        self.maps = nn.ModuleList(nn.Linear(embedding_size, embedding_size) for _ in range(num_modalities))

    @staticmethod
    def others_mean(embeddings: torch.Tensor, availability: torch.Tensor) -> torch.Tensor:
        """(n, M, D): for modality m, the mean of the item's available embeddings other than m (0 if none)."""
        weight = availability.to(embeddings.dtype).unsqueeze(-1)
        total = (embeddings * weight).sum(dim=1, keepdim=True)
        count = weight.sum(dim=1, keepdim=True)
        return (total - embeddings * weight) / (count - weight).clamp(min=1.0)

    @staticmethod
    def has_other(availability: torch.Tensor) -> torch.Tensor:
        """(n, M) bool: whether the item has an available modality besides m."""
        count = availability.sum(dim=1, keepdim=True)
        return (count - availability.long()) > 0

    def predict(self, embeddings: torch.Tensor, availability: torch.Tensor) -> torch.Tensor:
        inputs = self.others_mean(embeddings, availability)
        predicted = torch.stack([linear(inputs[:, m]) for m, linear in enumerate(self.maps)], dim=1)
        return torch.where(self.has_other(availability).unsqueeze(-1), predicted, embeddings)


class MixtureOfExperts(nn.Module):
    """sum_k softmax(G x)_k * (W_k x + b_k) with `num_experts` distinct affine experts.

    The experts are the K output blocks of one (d_in -> K * d_out) layer: each block has its own weights, and one
    matrix product evaluates them all.
    """

    def __init__(self, input_size: int, output_size: int, num_experts: int):
        super().__init__()
        self.num_experts = num_experts
        self.output_size = output_size
        self.experts = nn.Linear(input_size, num_experts * output_size)
        self.gate = nn.Linear(input_size, num_experts)

    def expert_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """(n, K, d_out): every expert's output."""
        return self.experts(x).view(x.shape[0], self.num_experts, self.output_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.gate(x), dim=1)
        return (weights.unsqueeze(2) * self.expert_outputs(x)).sum(dim=1)


class AttentiveContentEncoder(nn.Module):
    """One embedding per modality (an affine map of its rows), pooled with attention weights
    softmax_m(w^T tanh(A h_m + b)), then an MLP. CCFCRec pools attribute embeddings this way; modalities play the
    attributes' part here."""

    def __init__(self, modality_sizes: List[int], embedding_size: int, hidden_sizes: List[int], activation: str):
        super().__init__()
        self.modality_sizes = list(modality_sizes)
        self.projections = nn.ModuleList(nn.Linear(size, embedding_size) for size in modality_sizes)
        self.attention = nn.Sequential(nn.Linear(embedding_size, embedding_size), nn.Tanh(),
                                       nn.Linear(embedding_size, 1, bias=False))
        self.output = mlp(embedding_size, hidden_sizes, embedding_size, activation)

    def attention_weights(self, embedded: torch.Tensor) -> torch.Tensor:
        """(n, M) weights on the simplex from per-modality embeddings (n, M, d)."""
        # exp(s - logsumexp s) is the softmax; torch.softmax's CPU kernel stalls on thread hand-offs when the
        # cores are shared, even for (n, 2) inputs.
        scores = self.attention(embedded).squeeze(2)
        return (scores - torch.logsumexp(scores, dim=1, keepdim=True)).exp()

    def embed_modalities(self, content: torch.Tensor) -> torch.Tensor:
        """(n, M, d) per-modality embeddings of concatenated content rows (n, sum d_m)."""
        parts = torch.split(content, self.modality_sizes, dim=1)
        return torch.stack([projection(part) for projection, part in zip(self.projections, parts)], dim=1)

    def forward(self, content: torch.Tensor) -> torch.Tensor:
        embedded = self.embed_modalities(content)
        pooled = (self.attention_weights(embedded).unsqueeze(2) * embedded).sum(dim=1)
        return self.output(pooled)
