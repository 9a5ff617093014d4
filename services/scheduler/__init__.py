"""The scheduler: live cluster view and placement (filters, scorers, picker)."""
