"""One way to write a date everywhere, admin and grading pages alike: "26 Nov 2026" (no 11/26/2026 next
to "Nov. 26, 2026"). Django's own English formats still parse what people type into date fields."""

DATE_FORMAT = "j M Y"
SHORT_DATE_FORMAT = "j M Y"
DATETIME_FORMAT = "j M Y, H:i"
SHORT_DATETIME_FORMAT = "j M Y, H:i"
TIME_FORMAT = "H:i"
MONTH_DAY_FORMAT = "j F"
YEAR_MONTH_FORMAT = "F Y"
