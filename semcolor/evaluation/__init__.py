"""`semcolor evaluate`: a checkpoint measured on image/mask pairs at full resolution, distributed over Ray Data."""
