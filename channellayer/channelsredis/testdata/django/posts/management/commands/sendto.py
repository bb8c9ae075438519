import json

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Send one message (a JSON object) to one channel name."

    def add_arguments(self, parser):
        parser.add_argument("channel")
        parser.add_argument("message")

    def handle(self, channel, message, **options):
        async_to_sync(get_channel_layer().send)(channel, json.loads(message))
