"""Plain data types shared by the core and the drivers: events, plans, outputs."""
