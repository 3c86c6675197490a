"""The paper's study layouts (Table 1) on any preset."""
