# All three boards in one dataset and one vocabulary; the first token of a route names its board.
from config.kilter import boards as _kilter
from config.moonboard import boards as _moonboard
from config.tension import boards as _tension

dataset = 'boards'
boards = _kilter + _tension + _moonboard
