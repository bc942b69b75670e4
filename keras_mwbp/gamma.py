"""Loss weights gamma from head depths and the decay exponent nu.

For auxiliary heads, gamma_i = max(0.01, (L_i / L_{K-1}) ** nu), where L_i is
the depth of head i's tap and L_{K-1} that of the deepest auxiliary head; the
final head has gamma_K = 1 (Guo et al., "Multi-way backpropagation for
training compact deep neural networks", Neural Networks 2020, Eq. 5).
"""

import numpy as np
import tensorflow as tf

# Floor that keeps a very shallow head from being switched off.
MIN_GAMMA = 0.01


def gamma_from_nu(head_depths, nu):
    """Computes the K+1 loss weights as a float32 tensor.

    Args:
        head_depths: Sequence of K+1 depths L_i, shallow to deep.
        nu: Scalar tensor or float, the decay exponent.

    Returns:
        A float32 tensor of shape `(K+1,)`.
    """
    num_heads = len(head_depths)
    if num_heads == 1:
        return tf.ones((1,), tf.float32)
    depths = tf.constant(head_depths[:-1], tf.float32)
    ratio = depths / float(head_depths[-2])
    nu = tf.cast(nu, tf.float32)
    auxiliary = tf.maximum(MIN_GAMMA, tf.pow(ratio, nu))
    return tf.concat([auxiliary, tf.ones((1,), tf.float32)], axis=0)


def gamma_from_nu_numpy(head_depths, nu):
    """NumPy version of `gamma_from_nu`, for reports and callbacks."""
    head_depths = np.asarray(head_depths, dtype=np.float64)
    if len(head_depths) == 1:
        return np.ones(1)
    auxiliary = np.maximum(MIN_GAMMA, (head_depths[:-1] / head_depths[-2]) ** nu)
    return np.concatenate([auxiliary, [1.0]])
