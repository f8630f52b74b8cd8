"""Contact data inside free text: emails, phone numbers and @handles replaced by a marker.

A declared PII column is pseudonymised or withheld as a whole, but personal data also turns up
where no declaration can point: a social post that says "write to anna@web.de", a CRM line whose
fields slipped by one so that the email sits in the country column (and reappears in the reason
"country '...' is not a known country"). Those values are replaced wherever silver keeps such
text outside the restricted table: social post texts, quarantine records of PII sources and
quarantine reasons. Names in free text cannot be found by a pattern and are not touched.

The patterns are deliberately wide (a false positive costs a few characters of a post; a miss
leaks a person), but a phone number must start as one does (``+``, ``0`` or ``(0``), so that
dates, prices and counts stay readable.
"""

from __future__ import annotations

from pyspark.sql import Column
from pyspark.sql import functions as F

EMAIL = r"[\p{L}\p{N}._%+-]+@[\p{L}\p{N}-]+(\.[\p{L}\p{N}-]+)*\.\p{L}{2,}"
HANDLE = r"(?<![\p{L}\p{N}_])@[\p{L}\p{N}_.]*[\p{L}\p{N}_]"
PHONE = r"(\+[0-9]|\(0[0-9]*\)|(?<![\p{L}\p{N}.,_/-])0[0-9])[0-9 ()/.-]{5,}[0-9]"


def redact_contact_data(text: Column) -> Column:
    """``text`` with emails, then @handles, then phone numbers replaced by <email>, <handle>,
    <phone>; null stays null."""
    out = F.regexp_replace(text, EMAIL, "<email>")
    out = F.regexp_replace(out, HANDLE, "<handle>")
    return F.regexp_replace(out, PHONE, "<phone>")
