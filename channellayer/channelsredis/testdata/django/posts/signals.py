from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db.models.signals import pre_save
from django.dispatch import receiver

from .models import Post


@receiver(pre_save, sender=Post)
def announce_new_post(sender, instance, **kwargs):
    if instance.pk is not None:
        return
    channel_layer = get_channel_layer()
    async_to_sync(channel_layer.group_send)(
        "gossip",
        {
            "type": "name.gossip",
            "event": "New Post",
            "sender": instance.author,
            "message": instance.message,
        },
    )
