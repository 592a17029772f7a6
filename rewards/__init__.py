"""Reward functions and the reward router (answer x format x repetition, length penalty, IFEval, code, RM)."""
