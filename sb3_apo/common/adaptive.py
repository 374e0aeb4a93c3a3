"""The PPO paper's rule for a penalty coefficient that adapts to the measured divergence of each update."""


def adapt_penalty_coef(
    coef: float,
    divergence: float,
    target: float,
    tolerance: float = 1.5,
    factor: float = 2.0,
    bounds: tuple[float, float] = (0.0, float("inf")),
) -> float:
    """
    The PPO paper's rule for its KL coefficient beta (section 4), applied once per policy update:
    the coefficient is divided by ``factor`` when the divergence fell below ``target / tolerance``
    and multiplied by it when the divergence rose above ``target * tolerance``.

    PPOPenalty applies it to beta with the KL; APO's ``anchor_coef="auto"`` to its anchor
    coefficient with the anchor divergence.

    :param coef: the current coefficient
    :param divergence: the divergence measured on the whole rollout after the update
    :param target: the divergence the rule holds the updates near
    :param tolerance: the coefficient changes only when ``divergence`` leaves
        ``[target / tolerance, target * tolerance]``
    :param factor: the coefficient is divided (too small a divergence) or multiplied (too large) by this factor
    :param bounds: the new coefficient is clipped to ``[low, high]``
    :return: the coefficient of the next update
    """
    if divergence < target / tolerance:
        coef = coef / factor
    elif divergence > target * tolerance:
        coef = coef * factor
    return min(max(coef, bounds[0]), bounds[1])
