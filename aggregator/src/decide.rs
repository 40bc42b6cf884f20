// placeholder: the decision core lands here
