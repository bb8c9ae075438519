# A small Channels project of the classic shape: a posts app whose
# pre_save signal tells the "gossip" group about every new post, and a
# consumer at /notifications/ that forwards what the group receives.
#
# The channel layer is read from the environment so the tests can run it
# against either channels_redis layer, with or without encryption:
#   CHANNEL_LAYER  core (default) or pubsub
#   CHANNEL_PREFIX prefix of every Redis key (default asgi)
#   CHANNEL_KEYS   comma-separated symmetric encryption keys (default none)
#   REDIS_URL      default redis://127.0.0.1:6379/0
#   DJANGO_DB      path of the SQLite database
import os

BASE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECRET_KEY = "test-only-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "channels",
    "posts",
]

ROOT_URLCONF = "notifier.urls"
ASGI_APPLICATION = "notifier.asgi.application"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("DJANGO_DB", os.path.join(BASE_DIR, "db.sqlite3")),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = True

_layer = os.environ.get("CHANNEL_LAYER", "core")
_config = {
    "hosts": [os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")],
    "prefix": os.environ.get("CHANNEL_PREFIX", "asgi"),
}
if os.environ.get("CHANNEL_KEYS"):
    _config["symmetric_encryption_keys"] = os.environ["CHANNEL_KEYS"].split(",")
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": {
            "core": "channels_redis.core.RedisChannelLayer",
            "pubsub": "channels_redis.pubsub.RedisPubSubChannelLayer",
        }[_layer],
        "CONFIG": _config,
    }
}
