"""Sites (an apartment complex or a stay), their buildings (동), units (호) and entrances."""
