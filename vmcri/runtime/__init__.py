"""Pod and container services: records, names, states; backends do the host work."""
