"""Django settings for bench/compare.py: the Channels tutorial chat of
tests/redis/django_chat (its asgi.py and consumers.py, found on PYTHONPATH after this
directory) with the channel layer chosen by LAYER: "memory" (InMemoryChannelLayer) or
"redis" (channels_redis's RedisChannelLayer on REDIS_URL). No database, no auth."""
import os

SECRET_KEY = "cchannels-bench-only"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["channels"]
ROOT_URLCONF = None
ASGI_APPLICATION = "asgi.application"
DATABASES = {}
USE_TZ = True

if os.environ.get("LAYER", "memory") == "memory":
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
else:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")]},
        },
    }
