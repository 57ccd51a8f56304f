"""Suite-wide pytest hooks."""


def pytest_collection_modifyitems(config, items):
    """Run the ``monailabel`` tier (a real MONAI Label server, minutes) after everything else, keeping the order."""
    items[:] = [i for i in items if i.get_closest_marker("monailabel") is None] + [
        i for i in items if i.get_closest_marker("monailabel") is not None
    ]
