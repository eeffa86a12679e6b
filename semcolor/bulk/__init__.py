"""Bulk colorization of archives on Ray Data: the job, its stages and its result records."""
