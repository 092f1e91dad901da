"""De-identification: the PS3.15 confidentiality profile, keyed pseudonyms and the rules that choose them."""
