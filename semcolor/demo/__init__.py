"""`semcolor demo`: the whole product in one command, and its contact sheet."""
