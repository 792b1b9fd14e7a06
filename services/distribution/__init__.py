"""Distribution: encode a production's program once, deliver it to every output."""
