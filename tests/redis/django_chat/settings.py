"""Minimal Django settings for the Channels tutorial chat (tests/redis/test_django_chat.py).

Only what the tutorial's ChatConsumer needs: the channel layer on Redis, URL taken from
the environment (REDIS_URL; LAYER=pubsub selects RedisPubSubChannelLayer, LAYER=memory
InMemoryChannelLayer, for bench/compare.py). No database, no sessions, no auth.
"""
import os

SECRET_KEY = "cchannels-interop-test-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["channels"]
ROOT_URLCONF = None
ASGI_APPLICATION = "asgi.application"
DATABASES = {}
USE_TZ = True

if os.environ.get("LAYER") == "memory":  # bench/compare.py's Django in-memory cells
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
else:
    _backend = ("channels_redis.pubsub.RedisPubSubChannelLayer"
                if os.environ.get("LAYER") == "pubsub"
                else "channels_redis.core.RedisChannelLayer")
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": _backend,
            "CONFIG": {"hosts": os.environ.get("REDIS_URL",
                                               "redis://127.0.0.1:6379").split(",")},
        },
    }
