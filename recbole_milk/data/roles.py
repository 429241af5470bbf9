"""Roles of items in the new-item split, as stored in NewItemDataset.item_role (indexed by internal item id)."""
ROLE_PAD = -1
ROLE_WARM = 0
ROLE_VALID = 1
ROLE_TEST = 2
ROLE_NAMES = {ROLE_WARM: "warm", ROLE_VALID: "valid", ROLE_TEST: "test"}
