from django.views import View


class ChatCompletionsView(View):
    pass


class ModelsView(View):
    pass
