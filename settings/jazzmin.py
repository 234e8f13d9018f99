"""The admin's look: Jazzmin, arranged for staff, graders and the data team.

No CDN: fonts and scripts come from Jazzmin's own static files, so the admin
works offline.
"""

JAZZMIN_SETTINGS = {
    "site_title": "Grading Center",
    "site_header": "Grading Center",
    "site_brand": "Grading Center",
    "welcome_sign": "Grading Center: studies, photos and grades",
    "copyright": "Grading Center",
    "site_logo": "gradingcenter/logo.svg",
    "site_icon": "gradingcenter/logo.svg",
    "site_logo_classes": "",
    "use_google_fonts_cdn": False,
    "show_ui_builder": False,
    # "+" beside a select opens a popup window: the modal would need an iframe, which the CSP forbids
    # (frame-ancestors 'none'); admin.css keeps AdminLTE's overlay off the popup.
    "related_modal_active": False,
    "navigation_expanded": True,
    "topmenu_links": [
        {"name": "Home", "url": "admin:index"},
        {"name": "Grading", "url": "admin:grading_dashboard"},
        {
            "name": "Adjudication",
            "url": "admin:grading_adjudication",
            "permissions": ["grading.adjudicate_grade"],
        },
        {"name": "My account", "url": "accounts:profile"},
    ],
    "usermenu_links": [
        {"name": "My account", "url": "accounts:profile", "icon": "fas fa-id-card"},
    ],
    # Staff see studies first, then people and background work.
    "order_with_respect_to": [
        "studies",
        "studies.Study",
        "studies.Patient",
        "studies.Image",
        "studies.ImageImport",
        "studies.Region",
        "grading",
        "grading.Grade",
        "grading.GradeType",
        "auth",
        "django_tasks_db",
    ],
    "hide_apps": [],
    "icons": {
        "auth": "fas fa-users-cog",
        "auth.user": "fas fa-user",
        "auth.Group": "fas fa-users",
        "studies.Region": "fas fa-globe-africa",
        "studies.Study": "fas fa-folder-open",
        "studies.Patient": "fas fa-user-injured",
        "studies.Image": "fas fa-eye",
        "studies.ImageImport": "fas fa-file-archive",
        "django_tasks_db.DBTaskResult": "fas fa-tasks",
        "grading.GradeType": "fas fa-list-ol",
        "grading.GradeField": "fas fa-list",
        "grading.GradeOption": "fas fa-dot-circle",
        "grading.Grade": "fas fa-check-square",
        "grading.GradeEntry": "fas fa-check",
        "knox.AuthToken": "fas fa-key",
    },
    "custom_links": {
        "grading": [{"name": "My grading", "url": "admin:grading_dashboard", "icon": "fas fa-pen"}],
        # Under studies, not grading: adjudicators see the studies app (read-only) and not the grading one.
        "studies": [
            {
                "name": "Adjudication",
                "url": "admin:grading_adjudication",
                "icon": "fas fa-balance-scale",
                "permissions": ["grading.adjudicate_grade"],
            }
        ],
    },
    "default_icon_parents": "fas fa-chevron-circle-right",
    "default_icon_children": "fas fa-circle",
    "changeform_format": "single",
    "changeform_format_overrides": {"auth.user": "collapsible", "auth.group": "vertical_tabs"},
    "custom_css": "gradingcenter/admin.css",
    "custom_js": "gradingcenter/admin.js",
}

JAZZMIN_UI_TWEAKS = {
    "theme": "default",
    "navbar_small_text": False,
    "sidebar_nav_small_text": False,
    "sidebar_nav_flat_style": True,
}
