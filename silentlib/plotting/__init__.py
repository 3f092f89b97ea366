"""Figures in the book's house style (matplotlib; safe under the Agg backend), by concept.

* :mod:`silentlib.plotting.style` -- the house style: :data:`~silentlib.plotting.style.COLORS`
  (the paper's Figure 1: loss blue, kernel norm orange, alignment green),
  :data:`~silentlib.plotting.style.STYLE`, :func:`~silentlib.plotting.style.use_style`,
  :func:`~silentlib.plotting.style.scale_note`, :func:`~silentlib.plotting.style.log_time_axis`.
* :mod:`silentlib.plotting.dynamics` -- training dynamics against time (the paper's Figure 1
  panels, simulation against theory, class means, modes, the deep linear scale).
* :mod:`silentlib.plotting.scaling` -- scaling laws and their fits (times and errors against
  sigma, half-loss times, final alignment against depth).
* :mod:`silentlib.plotting.geometry` -- kernel geometry and predictions (kernel regression
  against the network, RKHS level sets, alignment matrices, top-eigenvector angles, the
  whitening sweep).
* :mod:`silentlib.plotting.sweeps` -- sweeps over architectures (the paper's Appendix J) and the
  kernel norm's normalized growth (Figure 4(d)).
* :mod:`silentlib.plotting.silence` -- the book's test of silence against the distance of the
  network to kernel regression with its final and initial NTKs (chapter 11).

Plotters draw curves that are already computed (by :mod:`silentlib.theory`, :mod:`silentlib.stats`
or a :class:`~silentlib.train.Trajectory`); none of them solves a model. Every name above is
importable from :mod:`silentlib.plotting` itself (``from silentlib import plotting as slp``;
``slp.plot_dynamics(...)``). Importing it applies :func:`~silentlib.plotting.style.use_style`.
"""
from .dynamics import (plot_class_means, plot_deep_scale, plot_dynamics, plot_modes,  # noqa: F401
                       plot_sim_vs_theory, plot_theory_modes, plot_trajectory)
from .geometry import (plot_alignment_matrix, plot_nonlinear_run, plot_prediction_scatter,  # noqa: F401
                       plot_realignment, plot_rkhs_level_sets, plot_whitening_sweep)
from .scaling import (plot_depth_alignment, plot_error_scaling, plot_half_loss_times,  # noqa: F401
                      plot_time_power_law, plot_time_scaling)
from .silence import plot_silence_evidence  # noqa: F401
from .sweeps import plot_architecture_sweep, plot_kernel_norm_growth, settle_time  # noqa: F401
from .style import COLORS, FIGURE_MAX_WIDTH, STYLE, log_time_axis, scale_note, use_style  # noqa: F401

use_style()
