from django.core.management.base import BaseCommand

from posts.models import Post


class Command(BaseCommand):
    help = "Create a post, as a view would; the pre_save signal announces it."

    def add_arguments(self, parser):
        parser.add_argument("author")
        parser.add_argument("message")

    def handle(self, author, message, **options):
        Post.objects.create(author=author, message=message)
