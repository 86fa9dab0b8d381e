"""The MnasSearch operator: runs ``MnasSearch`` custom resources on a controller.

``python -m services.operator`` watches MnasSearch objects, submits each one's spec to the
controller exactly once (the search id comes from the object's uid), copies the search's
progress into the object's status and cancels the search when the object is deleted.
"""
