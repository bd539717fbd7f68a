"""Jurisdiction codes: ISO 3166-1 alpha-2 countries, plus EU for the European Union.

A code nobody recognises is an error where it is written (a policy, a models file), never a
jurisdiction that silently matches nothing. `UK`, common in contracts, is accepted as `GB`.
The country list is the IANA time zone database's `iso3166.tab` (public domain).
"""

from __future__ import annotations

__all__ = ["ALIASES", "COUNTRIES", "EU_MEMBERS", "REGIONS", "jurisdiction_code"]

_ISO_3166 = """
AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS
BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE
EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM
HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC
LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA
NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW
SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO
TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW
"""
_EU = "AT BE BG HR CY CZ DK EE FI FR DE GR HU IE IT LV LT LU MT NL PL PT RO SK SI ES SE"

COUNTRIES = frozenset(_ISO_3166.split())
EU_MEMBERS = frozenset(_EU.split())
REGIONS = frozenset({"EU"})
ALIASES = {"UK": "GB"}


def jurisdiction_code(text: str) -> str:
    """The code for `text` (`UK` → `GB`); `ValueError` naming the problem if it is not one."""
    code = ALIASES.get(text, text)
    if code in COUNTRIES or code in REGIONS:
        return code
    hint = "upper-case" if code.upper() in COUNTRIES | REGIONS else "ISO 3166-1 alpha-2 (JP, US, DE, …) or EU"
    raise ValueError(f"unknown jurisdiction {text!r}: use {hint} codes")
