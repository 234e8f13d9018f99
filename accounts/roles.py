"""The roles of the Grading Center and what each may do in the admin.

Groups are created by a migration (`accounts.0001_roles`); later apps add
their permissions with a migration of their own that calls `roles_sync`.
"""

STUDY_ADMINISTRATORS = "Study administrators"
IMAGE_COLLECTORS = "Image collectors"
GRADERS = "Graders"
DATA_TEAM = "Data team"
ADJUDICATORS = "Adjudicators"

ALL = "all"
STUDIES_MODELS = ["region", "study", "patient", "image", "imageimport"]
GRADING_MODELS = ["gradetype", "gradefield", "gradeoption", "grade", "gradeentry", "consensus"]

# role -> {app label: {model: [actions]}}; ALL means every permission of the app. An action
# with an underscore is a whole codename (a model's own permission, e.g. view_all_grades).
ROLE_PERMISSIONS: dict[str, dict[str, object]] = {
    STUDY_ADMINISTRATORS: {
        "studies": ALL,
        "grading": ALL,
        "auth": {"user": ["view", "add", "change"], "group": ["view"]},
    },
    IMAGE_COLLECTORS: {
        "studies": {
            "region": ["view"],
            "study": ["view"],
            "patient": ["view", "add", "change"],
            "image": ["view", "add", "change"],
            "imageimport": ["view", "add"],
        }
    },
    # Graders work on the grading pages of their studies and see only their own grades.
    GRADERS: {"grading": {"grade": ["view"]}},
    # Adjudicators settle graders' disagreements and enter certification sets' reference grades,
    # on the adjudication pages only; they see every answer of the patients they adjudicate.
    ADJUDICATORS: {
        "studies": {model: ["view"] for model in ["region", "study", "patient", "image"]},
        "grading": {"grade": ["adjudicate"]},
    },
    DATA_TEAM: {
        "studies": {model: ["view"] for model in STUDIES_MODELS},
        "grading": {model: ["view"] for model in GRADING_MODELS} | {"grade": ["view", "view_all_grades"]},
    },
}


def roles_sync(apps, schema_editor=None) -> None:
    """Create the role groups and give each exactly the permissions above."""
    from django.contrib.auth.management import create_permissions

    for app_config in apps.get_app_configs():
        app_config.models_module = True
        create_permissions(app_config, verbosity=0, apps=apps)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for role, grants in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        wanted = []
        for app_label, models in grants.items():
            permissions = Permission.objects.filter(content_type__app_label=app_label)
            if models == ALL:
                wanted += list(permissions)
                continue
            for model, actions in models.items():
                codenames = [action if "_" in action else f"{action}_{model}" for action in actions]
                wanted += list(permissions.filter(content_type__model=model, codename__in=codenames))
        kept = {p.pk for p in group.permissions.all() if p.content_type.app_label not in grants}
        group.permissions.set(kept | {p.pk for p in wanted})
