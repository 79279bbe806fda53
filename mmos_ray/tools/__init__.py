"""Tools that are not pipeline stages: the problem generator and the GSM-HARD audit."""
