from django.core.management.base import BaseCommand

from accounts.services import user_ensure


class Command(BaseCommand):
    help = "Create a superuser for local use (admin / admin by default); running again changes nothing."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")
        parser.add_argument("--password", default="admin")
        parser.add_argument("--email", default="admin@localhost")

    def handle(self, *args, username, password, email, **options):
        _, created = user_ensure(username=username, password=password, email=email, superuser=True)
        verb = "Created" if created else "Kept the existing"
        self.stdout.write(f"{verb} superuser {username!r}.")
