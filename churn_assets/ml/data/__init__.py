"""The data: its contract, reading, validation, cleaning, landing, snapshots, history,
splits and synthetic exports."""
