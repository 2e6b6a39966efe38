"""Where response tokens look: attention shares on flagged spans, pure functions on tensors.

For one rendered sample the tokens fall into four groups (indices into the
token sequence of length ``T``):

* ``span``      -- instruction tokens overlapping a flagged (confounder) span;
* ``rest``      -- the other instruction tokens;
* ``template``  -- every other prompt token (BOS, chat headers, system turn);
* ``response``  -- tokens of the response; they are the *queries*.

The prompt is every token before the first response token. For each layer,
head and response query, :func:`group_masses` sums the attention weights that
fall on each group; :func:`prompt_shares` renormalises the three prompt groups
so they sum to 1 (a response query also attends to earlier response tokens,
and how much it does is not what we compare). Averages over heads and queries
give one number per layer; their mean over layers is the overall share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

GROUPS = ("span", "rest", "template")


@dataclass(frozen=True)
class TokenGroups:
    """Token indices of one rendered sample (see the module docstring)."""

    span: list[int]
    rest: list[int]
    template: list[int]
    response: list[int]
    length: int

    @property
    def instruction(self) -> list[int]:
        return sorted(self.span + self.rest)

    @property
    def prompt_length(self) -> int:
        return len(self.span) + len(self.rest) + len(self.template)


def token_groups(
    offsets: Sequence[tuple[int, int]],
    instruction_span: tuple[int, int],
    response_span: tuple[int, int],
    flagged: Sequence[tuple[int, int]],
) -> TokenGroups:
    """Split tokens by their character ``offsets`` in the rendered text.

    ``instruction_span``/``response_span`` and ``flagged`` are ``[start, end)``
    ranges of the rendered text. A token belongs to a range when it overlaps it
    (zero-width tokens, e.g. special tokens with offsets ``(0, 0)``, overlap
    nothing). The prompt is every token before the first response token; the
    response tokens are the queries.
    """

    def overlaps(s: int, e: int, lo: int, hi: int) -> bool:
        return e > s and hi > lo and s < hi and e > lo

    response = [i for i, (s, e) in enumerate(offsets) if overlaps(s, e, *response_span)]
    if not response:
        raise ValueError("no token overlaps the response")
    first = response[0]
    span, rest, template = [], [], []
    for i in range(first):
        s, e = offsets[i]
        if overlaps(s, e, *instruction_span):
            (span if any(overlaps(s, e, lo, hi) for lo, hi in flagged) else rest).append(i)
        else:
            template.append(i)
    return TokenGroups(span, rest, template, response, len(offsets))


def _index_mask(indices: Sequence[int], length: int, device: torch.device) -> torch.Tensor:
    mask = torch.zeros(length, dtype=torch.float32, device=device)
    if len(indices):
        mask[torch.as_tensor(list(indices), device=device)] = 1.0
    return mask


def group_masses(attn: torch.Tensor, groups: TokenGroups) -> torch.Tensor:
    """Attention mass of each response query on each group.

    ``attn``: ``[H, T, T]`` (or ``[1, H, T, T]``) attention weights of one layer,
    rows = queries, columns = keys, each row summing to 1.
    Returns ``[H, Q, 4]`` (float32) with ``Q = len(groups.response)`` and the
    last axis ``span, rest, template, response`` (keys at or after the first
    response token); the four sum to 1 for each head and query.
    """
    if attn.dim() == 4:
        attn = attn[0]
    T = attn.shape[-1]
    if T != groups.length:
        raise ValueError(f"attention covers {T} tokens, the groups {groups.length}")
    rows = attn[:, groups.response, :].float()  # [H, Q, T]
    prompt_len = groups.response[0]
    masks = torch.stack(
        [
            _index_mask(groups.span, T, rows.device),
            _index_mask(groups.rest, T, rows.device),
            _index_mask(groups.template, T, rows.device),
        ],
        dim=1,
    )  # [T, 3]
    on_prompt = rows @ masks  # [H, Q, 3]
    on_response = rows[..., prompt_len:].sum(-1, keepdim=True)
    return torch.cat([on_prompt, on_response], dim=-1)


def prompt_shares(masses: torch.Tensor) -> torch.Tensor:
    """``[..., 4]`` masses -> ``[..., 3]`` shares of span/rest/template within the prompt (sum 1)."""
    prompt = masses[..., :3]
    return prompt / prompt.sum(-1, keepdim=True).clamp_min(1e-30)


def density_ratio(share_span: float, share_rest: float, n_span: int, n_rest: int) -> float | None:
    """Attention per span token over attention per other instruction token (1 = no preference).

    ``None`` when either group is empty or the rest gets no attention.
    """
    if n_span == 0 or n_rest == 0 or share_rest <= 0:
        return None
    return (share_span / n_span) / (share_rest / n_rest)


def instruction_profile(attn: torch.Tensor, groups: TokenGroups) -> torch.Tensor:
    """``[n_instruction_tokens]``: attention on each instruction token, mean over heads and response queries.

    Each query's row is first renormalised over the prompt (as in
    :func:`prompt_shares`), so the values of one layer sum, with the template
    tokens, to 1.
    """
    if attn.dim() == 4:
        attn = attn[0]
    rows = attn[:, groups.response, : groups.response[0]].float()  # [H, Q, P]
    rows = rows / rows.sum(-1, keepdim=True).clamp_min(1e-30)
    return rows[..., groups.instruction].mean(dim=(0, 1))


@dataclass(frozen=True)
class LayerShares:
    """Per-layer shares of one sample (each list has one float per layer)."""

    span: list[float]
    rest: list[float]
    template: list[float]
    raw_response: list[float]  # share of all attention that stays on response keys
    profile: list[list[float]]  # [layer][instruction token] (see instruction_profile)


def one_layer(
    attn: torch.Tensor, groups: TokenGroups, *, profile: bool = False
) -> tuple[float, float, float, float, list[float] | None]:
    """(span, rest, template, raw_response, profile or None) of one layer's ``[1, H, T, T]`` weights."""
    masses = group_masses(attn, groups)  # [H, Q, 4]
    shares = prompt_shares(masses).mean(dim=(0, 1))
    prof = instruction_profile(attn, groups).tolist() if profile else None
    return float(shares[0]), float(shares[1]), float(shares[2]), float(masses[..., 3].mean()), prof


def combine_layers(results: Sequence[tuple[float, float, float, float, list[float] | None]]) -> LayerShares:
    """:class:`LayerShares` from :func:`one_layer` results in layer order."""
    return LayerShares(
        span=[r[0] for r in results],
        rest=[r[1] for r in results],
        template=[r[2] for r in results],
        raw_response=[r[3] for r in results],
        profile=[r[4] for r in results if r[4] is not None],
    )


def layer_shares(attentions: Sequence[torch.Tensor], groups: TokenGroups, *, profile: bool = False) -> LayerShares:
    """Shares per layer, averaged over heads and response queries.

    ``attentions``: one ``[1, H, T, T]`` tensor per layer (``output_attentions``).
    """
    return combine_layers([one_layer(attn, groups, profile=profile) for attn in attentions])
