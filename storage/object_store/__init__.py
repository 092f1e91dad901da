"""Object stores: one interface, interchangeable backends."""
