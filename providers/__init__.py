"""Pulumi dynamic providers: the create/read/update/delete of things no Pulumi provider manages
(the local target's folders and processes), kept apart from the components that use them."""
